//! Labelled data sets opened from `--data`: image folders, lists of paths, `.npz` arrays and
//! Fashion-MNIST, with fixtures written to a temporary folder at test time; and the thread that
//! decodes batches ahead of the engine.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use advlens::array::Array;
use advlens::data::{
    Batch, DataError, DataOptions, Examples, Prefetch, Unreadable, open_data, to_array_with,
};
use advlens::model::npz::{RawArray, write_npy_raw, write_npz_raw};
use image::{ImageFormat, RgbImage};

/// Options for a model taking `input` with `classes` classes and no evaluation resize.
fn opts(input: [usize; 3], classes: usize) -> DataOptions {
    DataOptions {
        input,
        eval_resize: None,
        classes,
        classes_file: None,
        n: None,
    }
}

/// A 4×4 RGB image whose pixel (x, y) is `(base + 16y + 4x, base + 1, 255 - base)`.
fn pattern(base: u8) -> RgbImage {
    RgbImage::from_fn(4, 4, |x, y| {
        image::Rgb([base + (16 * y + 4 * x) as u8, base + 1, 255 - base])
    })
}

/// The values `pattern(base)` has as a `[3, 4, 4]` example in [0, 1].
fn pattern_values(base: u8) -> Vec<f32> {
    let img = pattern(base);
    let mut v = vec![0.0; 48];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            v[c * 16 + (y * 4 + x) as usize] = f32::from(p.0[c]) / 255.0;
        }
    }
    v
}

fn write_png(path: &Path, img: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, ImageFormat::Png).unwrap();
}

fn spec(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn load_all(set: &dyn Examples, shape: [usize; 3]) -> Batch {
    set.load(&(0..set.len()).collect::<Vec<_>>(), shape)
}

fn err(spec: &str, o: &DataOptions) -> String {
    match open_data(spec, o) {
        Ok(set) => panic!("{spec} opened as {}", set.describe()),
        Err(e) => e.to_string(),
    }
}

// --- image folders -------------------------------------------------------------------------

#[test]
fn an_image_folder_loads_known_pixels_and_labels_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of order: the set is sorted by class (sorted folder names), then file name.
    write_png(&dir.path().join("dog/b.png"), &pattern(40));
    write_png(&dir.path().join("cat/z.png"), &pattern(20));
    write_png(&dir.path().join("dog/a.png"), &pattern(30));
    write_png(&dir.path().join("cat/sub/y.PNG"), &pattern(10));
    let set = open_data(&spec(dir.path()), &opts([3, 4, 4], 2)).unwrap();
    assert_eq!(set.len(), 4);
    assert!(
        set.describe().contains("4 images, 2 classes"),
        "{}",
        set.describe()
    );
    let names: Vec<String> = (0..4).map(|i| set.path(i).unwrap()).collect();
    assert!(names[0].ends_with("cat/sub/y.PNG"), "{names:?}");
    assert!(names[1].ends_with("cat/z.png"));
    assert!(names[2].ends_with("dog/a.png"));
    assert!(names[3].ends_with("dog/b.png"));
    let batch = set.load(&[3, 0, 2], [3, 4, 4]);
    assert!(batch.unreadable.is_empty(), "{:?}", batch.unreadable);
    assert_eq!(batch.indices, [3, 0, 2]);
    assert_eq!(batch.labels, [1, 0, 1]);
    assert_eq!(batch.images.shape(), &[3, 3, 4, 4]);
    assert_eq!(batch.paths[1].as_deref(), Some(names[0].as_str()));
    for (k, base) in [40, 10, 30].into_iter().enumerate() {
        assert_eq!(batch.images.example(k), pattern_values(base), "example {k}");
    }
}

#[test]
fn images_go_through_the_models_own_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let photo = RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, 90])
    });
    let path = dir.path().join("only/photo.jpg");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    photo.save_with_format(&path, ImageFormat::Jpeg).unwrap();
    let mut o = opts([3, 4, 4], 1);
    o.eval_resize = Some(6);
    let set = open_data(&spec(dir.path()), &o).unwrap();
    let batch = load_all(&*set, [3, 4, 4]);
    let decoded = advlens::data::load_image(&path).unwrap();
    let expected = to_array_with(&decoded, 3, [4, 4], Some(6)).unwrap();
    assert_eq!(batch.images.data(), expected.data());
    // Without the evaluation resize the whole image is squeezed to 4×4: different pixels.
    let plain = to_array_with(&decoded, 3, [4, 4], None).unwrap();
    assert_ne!(plain.data(), expected.data());
    // A grey model gets one channel.
    let grey = set.load(&[0], [1, 4, 4]);
    assert_eq!(grey.images.shape(), &[1, 1, 4, 4]);
}

#[test]
fn class_order_comes_from_the_class_file_or_sorted_or_numbered_folders() {
    let dir = tempfile::tempdir().unwrap();
    for (class, base) in [("apple", 10), ("banana", 20), ("cherry", 30)] {
        write_png(&dir.path().join(class).join("1.png"), &pattern(base));
    }
    let labels = |o: &DataOptions| load_all(&*open_data(&spec(dir.path()), o).unwrap(), [3, 4, 4]);
    // Sorted names: apple 0, banana 1, cherry 2.
    let b = labels(&opts([3, 4, 4], 3));
    assert_eq!(b.labels, [0, 1, 2]);
    assert_eq!(b.images.example(0), pattern_values(10));
    // A class file puts cherry first; the set is ordered by label, so cherry's image comes
    // first. Its lines may carry names after a space or a comma.
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cherry red fruit\nbanana,yellow\napple\nunused\n").unwrap();
    let mut o = opts([3, 4, 4], 5);
    o.classes_file = Some(classes.clone());
    let b = labels(&o);
    assert_eq!(b.labels, [0, 1, 2]);
    assert_eq!(b.images.example(0), pattern_values(30));
    assert_eq!(b.images.example(2), pattern_values(10));
    // Numbered folders are their numbers, sorted as numbers (10 after 2).
    let numbered = tempfile::tempdir().unwrap();
    write_png(&numbered.path().join("10/a.png"), &pattern(10));
    write_png(&numbered.path().join("2/a.png"), &pattern(20));
    let set = open_data(&spec(numbered.path()), &opts([3, 4, 4], 11)).unwrap();
    let b = load_all(&*set, [3, 4, 4]);
    assert_eq!(b.labels, [2, 10]);
    assert_eq!(b.images.example(0), pattern_values(20));
    let e = err(&spec(numbered.path()), &opts([3, 4, 4], 10));
    assert!(
        e.contains("10: label 10 is out of range for the model's 10 classes"),
        "{e}"
    );
}

#[test]
fn imagenet_synset_folders_map_through_the_class_file() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    write_png(
        &val.join("n01484850/ILSVRC2012_val_00000003.JPEG.png"),
        &pattern(30),
    );
    write_png(
        &val.join("n01440764/ILSVRC2012_val_00000001.png"),
        &pattern(10),
    );
    let classes = dir.path().join("synsets.txt");
    std::fs::write(
        &classes,
        "n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\nn01491361 tiger shark\n",
    )
    .unwrap();
    let mut o = opts([3, 4, 4], 1000);
    o.classes_file = Some(classes.clone());
    let set = open_data(&spec(&val), &o).unwrap();
    let b = load_all(&*set, [3, 4, 4]);
    assert_eq!(b.labels, [0, 2]);
    assert_eq!(b.images.example(1), pattern_values(30));
    // Without the class file, two sorted synsets would be labels 0 and 1: refused.
    let e = err(&spec(&val), &opts([3, 4, 4], 1000));
    assert!(
        e.contains("WordNet IDs (n01440764, ...)") && e.contains("--classes"),
        "{e}"
    );
    // A folder the class file does not name is an error that lists it.
    write_png(&val.join("n09999999/x.png"), &pattern(1));
    write_png(&val.join("n09999998/x.png"), &pattern(1));
    let e = err(&spec(&val), &o);
    assert!(
        e.contains("2 class folder(s) are not in the class file"),
        "{e}"
    );
    assert!(e.contains("n09999998, n09999999"), "{e}");
}

#[test]
fn more_classes_than_the_model_has_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b", "c"] {
        write_png(&dir.path().join(class).join("1.png"), &pattern(1));
    }
    let e = err(&spec(dir.path()), &opts([3, 4, 4], 2));
    assert!(e.contains("has 3 classes but the model has 2"), "{e}");
    let classes = dir.path().join("c.txt");
    std::fs::write(&classes, "a\nb\nc\n").unwrap();
    let mut o = opts([3, 4, 4], 2);
    o.classes_file = Some(classes);
    let e = err(&spec(dir.path()), &o);
    assert!(
        e.contains("class file") && e.contains("3 classes but the model has 2"),
        "{e}"
    );
}

#[test]
fn corrupt_and_non_image_files_are_unreadable_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("k/good.png");
    write_png(&good, &pattern(50));
    let png = std::fs::read(&good).unwrap();
    std::fs::write(dir.path().join("k/cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.path().join("k/text.jpg"), "this is a note, not a JPEG").unwrap();
    // Skipped: no image extension, hidden file, hidden folder.
    std::fs::write(dir.path().join("k/notes.txt"), "notes").unwrap();
    std::fs::write(dir.path().join("k/.thumb.png"), &png).unwrap();
    write_png(&dir.path().join(".cache/x.png"), &pattern(1));
    // Beside the class folders: in no class, skipped.
    std::fs::write(dir.path().join("LICENSE"), "text").unwrap();
    let set = open_data(&spec(dir.path()), &opts([3, 4, 4], 1)).unwrap();
    assert_eq!(set.len(), 3, "{}", set.describe());
    assert!(
        set.describe().contains("2 other files skipped"),
        "{}",
        set.describe()
    );
    let b = load_all(&*set, [3, 4, 4]);
    assert_eq!(b.len(), 1);
    assert_eq!(b.images.example(0), pattern_values(50));
    assert!(b.paths[0].as_ref().unwrap().ends_with("good.png"));
    let bad: Vec<&Unreadable> = b.unreadable.iter().collect();
    assert_eq!(bad.len(), 2);
    assert!(
        bad[0].path.ends_with("cut.png") && bad[0].index == 0,
        "{bad:?}"
    );
    assert!(bad[0].error.contains("cannot decode"), "{}", bad[0].error);
    assert!(
        bad[1].path.ends_with("text.jpg") && bad[1].index == 2,
        "{bad:?}"
    );
    assert!(
        bad[1].error.contains("unrecognised image format"),
        "{}",
        bad[1].error
    );
    // An index past the end is unreadable too, never a panic.
    let b = set.load(&[7], [3, 4, 4]);
    assert!(b.is_empty() && b.unreadable[0].error.contains("no example 7"));
}

#[test]
fn first_n_and_empty_folders() {
    let dir = tempfile::tempdir().unwrap();
    for (class, base) in [("a", 10), ("b", 20)] {
        for f in ["1.png", "2.png"] {
            write_png(&dir.path().join(class).join(f), &pattern(base));
        }
    }
    let mut o = opts([3, 4, 4], 2);
    o.n = Some(3);
    let set = open_data(&spec(dir.path()), &o).unwrap();
    assert_eq!(load_all(&*set, [3, 4, 4]).labels, [0, 0, 1]);
    let empty = tempfile::tempdir().unwrap();
    let e = err(&spec(empty.path()), &opts([3, 4, 4], 2));
    assert!(e.contains("has no class folders"), "{e}");
    std::fs::create_dir(empty.path().join("a")).unwrap();
    std::fs::write(empty.path().join("a/readme.md"), "").unwrap();
    let e = err(&spec(empty.path()), &opts([3, 4, 4], 2));
    assert!(e.contains("holds no images"), "{e}");
}

// --- lists of paths --------------------------------------------------------------------------

#[test]
fn a_csv_with_a_missing_file_lists_it_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("img/a.png"), &pattern(10));
    write_png(&dir.path().join("img/b.png"), &pattern(20));
    let abs = dir.path().join("img/b.png");
    let list = dir.path().join("list.csv");
    std::fs::write(
        &list,
        format!(
            "path,label\nimg/a.png,1\nimg/gone.png,0\n\"{}\",2\n",
            abs.display()
        ),
    )
    .unwrap();
    let set = open_data(&spec(&list), &opts([3, 4, 4], 3)).unwrap();
    assert_eq!(set.len(), 3);
    let b = load_all(&*set, [3, 4, 4]);
    assert_eq!(b.indices, [0, 2]);
    assert_eq!(b.labels, [1, 2]);
    assert_eq!(b.images.example(1), pattern_values(20));
    assert_eq!(b.unreadable.len(), 1);
    assert_eq!(b.unreadable[0].index, 1);
    assert!(
        b.unreadable[0].path.ends_with("img/gone.png"),
        "{:?}",
        b.unreadable
    );
    // A list whose paths are all wrong fails on opening, saying where paths are read from.
    let wrong = dir.path().join("img/wrong.csv");
    std::fs::write(&wrong, "img/a.png,0\nimg/b.png,0\n").unwrap();
    let e = err(&spec(&wrong), &opts([3, 4, 4], 3));
    assert!(e.contains("none of the first 2 files listed exists"), "{e}");
    assert!(e.contains("relative to the list's folder"), "{e}");
}

#[test]
fn tsv_and_txt_lists_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("a b.png"), &pattern(10));
    write_png(&dir.path().join("c.png"), &pattern(20));
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "n01 tench\nn02 goldfish\n").unwrap();
    let mut o = opts([3, 4, 4], 2);
    o.classes_file = Some(classes);
    let tsv = dir.path().join("l.tsv");
    std::fs::write(&tsv, "file\tclass\na b.png\tgoldfish\nc.png\tn01\n").unwrap();
    let b = load_all(&*open_data(&spec(&tsv), &o).unwrap(), [3, 4, 4]);
    assert_eq!(b.labels, [1, 0]);
    assert_eq!(b.images.example(0), pattern_values(10));
    // Caffe's val.txt: paths and numbers separated by (repeated) spaces, no header.
    let txt = dir.path().join("val.txt");
    std::fs::write(&txt, "c.png   1\n\nc.png 0\n").unwrap();
    let b = load_all(
        &*open_data(&spec(&txt), &opts([3, 4, 4], 2)).unwrap(),
        [3, 4, 4],
    );
    assert_eq!(b.labels, [1, 0]);
    // A spreadsheet's byte-order mark is not part of the first path.
    let bom = dir.path().join("bom.csv");
    std::fs::write(&bom, "\u{feff}c.png,1\n").unwrap();
    let b = load_all(
        &*open_data(&spec(&bom), &opts([3, 4, 4], 2)).unwrap(),
        [3, 4, 4],
    );
    assert_eq!((b.len(), b.labels[0]), (1, 1));
    // A class name without a class file is explained.
    let named = dir.path().join("named.csv");
    std::fs::write(&named, "c.png,0\nc.png,goldfish\n").unwrap();
    let e = err(&spec(&named), &opts([3, 4, 4], 2));
    assert!(
        e.contains("line 2") && e.contains("pass --classes FILE"),
        "{e}"
    );
    // A row without a label.
    std::fs::write(&named, "c.png,0\nc.png\n").unwrap();
    let e = err(&spec(&named), &opts([3, 4, 4], 2));
    assert!(e.contains("line 2: expected a path and a label"), "{e}");
}

#[test]
fn labels_out_of_range_in_a_list_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("a.png"), &pattern(10));
    let list = dir.path().join("list.csv");
    std::fs::write(&list, "path,label\na.png,2\na.png,3\n").unwrap();
    let e = err(&spec(&list), &opts([3, 4, 4], 3));
    assert!(
        e.contains("list.csv line 3: label 3 is out of range for the model's 3 classes (0 to 2)"),
        "{e}"
    );
    std::fs::write(&list, "a.png,-1\n").unwrap();
    let e = err(&spec(&list), &opts([3, 4, 4], 3));
    assert!(e.contains("line 1: label -1 is out of range"), "{e}");
}

// --- arrays ----------------------------------------------------------------------------------

fn raw(name: &str, descr: &str, shape: &[usize], data: Vec<u8>) -> RawArray {
    RawArray {
        name: name.into(),
        descr: descr.into(),
        shape: shape.to_vec(),
        data,
    }
}

fn labels_i8(labels: &[i64]) -> RawArray {
    let bytes = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    raw("y", "<i8", &[labels.len()], bytes)
}

/// Two 4×4 RGB images with distinct values in every channel, as `[N, H, W, C]` bytes.
fn nhwc_bytes() -> Vec<u8> {
    (0..2 * 4 * 4 * 3).map(|i| (i * 5 % 256) as u8).collect()
}

fn write(dir: &Path, name: &str, arrays: &[RawArray], deflate: bool) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, write_npz_raw(arrays, deflate)).unwrap();
    p
}

#[test]
fn npz_uint8_nhwc_and_float_nchw_give_the_same_images() {
    let dir = tempfile::tempdir().unwrap();
    let u8s = nhwc_bytes();
    let at = |n: usize, y: usize, x: usize, c: usize| u8s[((n * 4 + y) * 4 + x) * 3 + c];
    let mut nchw_u8 = Vec::new();
    for n in 0..2 {
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..4 {
                    nchw_u8.push(at(n, y, x, c));
                }
            }
        }
    }
    let floats: Vec<u8> = nchw_u8
        .iter()
        .flat_map(|&v| (f32::from(v) / 255.0).to_le_bytes())
        .collect();
    let doubles: Vec<u8> = nchw_u8
        .iter()
        .flat_map(|&v| (f64::from(v) / 255.0).to_be_bytes())
        .collect();
    let y = labels_i8(&[4, 1]);
    let files = [
        write(
            dir.path(),
            "u8.npz",
            &[raw("x", "|u1", &[2, 4, 4, 3], u8s.clone()), y.clone()],
            true,
        ),
        write(
            dir.path(),
            "f4.npz",
            &[raw("x", "<f4", &[2, 3, 4, 4], floats), y.clone()],
            false,
        ),
        write(
            dir.path(),
            "f8.npz",
            &[raw("x", ">f8", &[2, 3, 4, 4], doubles), y.clone()],
            false,
        ),
        write(
            dir.path(),
            "u8c.npz",
            &[raw("x", "|u1", &[2, 3, 4, 4], nchw_u8), y],
            false,
        ),
    ];
    let sets: Vec<Batch> = files
        .iter()
        .map(|f| {
            load_all(
                &*open_data(&spec(f), &opts([3, 4, 4], 5)).unwrap(),
                [3, 4, 4],
            )
        })
        .collect();
    let reference = &sets[0];
    assert_eq!(reference.labels, [4, 1]);
    assert_eq!(reference.images.shape(), &[2, 3, 4, 4]);
    // Channel 1 of image 1, pixel (y 2, x 3): NHWC element ((1·4 + 2)·4 + 3)·3 + 1 = 82.
    assert_eq!(
        reference.images.data()[48 + 16 + 2 * 4 + 3],
        f32::from(at(1, 2, 3, 1)) / 255.0
    );
    for (f, s) in files.iter().zip(&sets).skip(1) {
        assert_eq!(s.labels, reference.labels, "{}", f.display());
        for (a, b) in s.images.data().iter().zip(reference.images.data()) {
            assert!((a - b).abs() < 1e-6, "{}: {a} vs {b}", f.display());
        }
    }
}

#[test]
fn npz_labels_out_of_range_and_wrong_shapes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let x = raw("x", "|u1", &[2, 4, 4, 3], nhwc_bytes());
    let o = opts([3, 4, 4], 5);
    let p = write(
        dir.path(),
        "range.npz",
        &[x.clone(), labels_i8(&[0, 5])],
        false,
    );
    let e = err(&spec(&p), &o);
    assert!(
        e.contains("range.npz: y[1]: label 5 is out of range for the model's 5 classes"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "neg.npz",
        &[x.clone(), labels_i8(&[-3, 0])],
        false,
    );
    assert!(err(&spec(&p), &o).contains("y[0]: label -3"));
    // The model takes 8×8: arrays are not resized.
    let p = write(
        dir.path(),
        "small.npz",
        &[x.clone(), labels_i8(&[0, 1])],
        false,
    );
    let e = err(&spec(&p), &opts([3, 8, 8], 5));
    assert!(e.contains("are 3×4×4 but the model takes 3×8×8"), "{e}");
    // Float labels, a missing y, floats out of [0, 1], and a count that disagrees.
    let fy = raw(
        "y",
        "<f4",
        &[2],
        [0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let p = write(dir.path(), "fy.npz", &[x.clone(), fy], false);
    assert!(err(&spec(&p), &o).contains("y holds float32; labels must be integers"));
    let p = write(dir.path(), "nox.npz", std::slice::from_ref(&x), false);
    assert!(err(&spec(&p), &o).contains("holds the arrays [x]; a data set needs x"));
    let big: Vec<u8> = (0..96).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let p = write(
        dir.path(),
        "255.npz",
        &[raw("x", "<f4", &[2, 3, 4, 4], big), labels_i8(&[0, 1])],
        false,
    );
    assert!(err(&spec(&p), &o).contains("x holds the value 2: float images must be in [0, 1]"));
    let p = write(dir.path(), "count.npz", &[x, labels_i8(&[0, 1, 2])], false);
    assert!(err(&spec(&p), &o).contains("the 2 images of x need labels of shape [2]"));
}

#[test]
fn npy_images_find_their_labels_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, a: &RawArray| {
        let p = dir.path().join(name);
        std::fs::write(&p, write_npy_raw(a)).unwrap();
        p
    };
    let x = raw("x", "|u1", &[2, 4, 4, 3], nhwc_bytes());
    let npz = write(
        dir.path(),
        "both.npz",
        &[x.clone(), labels_i8(&[4, 1])],
        false,
    );
    let want = load_all(
        &*open_data(&spec(&npz), &opts([3, 4, 4], 5)).unwrap(),
        [3, 4, 4],
    );
    for (images, labels) in [
        ("x.npy", "y.npy"),
        ("X_test.npy", "y_test.npy"),
        ("val-images.npy", "val-labels.npy"),
    ] {
        let p = save(images, &x);
        save(labels, &labels_i8(&[4, 1]));
        let set = open_data(&spec(&p), &opts([3, 4, 4], 5)).unwrap();
        assert!(set.describe().contains(images), "{}", set.describe());
        let got = load_all(&*set, [3, 4, 4]);
        assert_eq!(got.labels, want.labels, "{images}");
        assert_eq!(got.images.data(), want.images.data(), "{images}");
    }
    // Labels that are not beside the images: every name tried is listed.
    let p = save("x_train.npy", &x);
    let e = err(&spec(&p), &opts([3, 4, 4], 5));
    assert!(
        e.contains("looked for beside the images as y_train.npy or Y_train.npy"),
        "{e}"
    );
    // A name with no x part cannot lead to labels.
    let p = save("pictures.npy", &x);
    assert!(err(&spec(&p), &opts([3, 4, 4], 5)).contains("name the files x.npy and y.npy"));
    // The labels are checked like an archive's: range, count, and a truncated file.
    let p = save("x_r.npy", &x);
    save("y_r.npy", &labels_i8(&[4, 5]));
    let e = err(&spec(&p), &opts([3, 4, 4], 5));
    assert!(
        e.contains("label 5 is out of range for the model's 5 classes"),
        "{e}"
    );
    let p = save("x_n.npy", &x);
    save("y_n.npy", &labels_i8(&[4]));
    assert!(err(&spec(&p), &opts([3, 4, 4], 5)).contains("need labels of shape [2]"));
    let p = save("x_t.npy", &x);
    std::fs::write(dir.path().join("y_t.npy"), b"\x93NUMPY").unwrap();
    assert!(err(&spec(&p), &opts([3, 4, 4], 5)).contains("y_t.npy"));
}

// --- Fashion-MNIST and the bundled images ----------------------------------------------------

#[test]
fn bundled_images_check_the_model_and_take_the_first_n() {
    let mut o = opts([1, 28, 28], 10);
    o.n = Some(7);
    let set = open_data("bundled", &o).unwrap();
    assert_eq!(set.len(), 7);
    let b = load_all(&*set, [1, 28, 28]);
    assert_eq!(&b.labels[..4], &[9, 2, 1, 1]);
    let e = err("bundled", &opts([3, 224, 224], 1000));
    assert!(
        e.contains("are 1×28×28 but the model takes 3×224×224"),
        "{e}"
    );
    let e = err("bundled", &opts([1, 28, 28], 5));
    assert!(e.contains("example 0: label 9 is out of range"), "{e}");
    let mut o = opts([1, 28, 28], 10);
    o.classes_file = Some("classes.txt".into());
    assert!(err("bundled", &o).contains("has its own labels"));
    let e = err("no/such/folder", &opts([1, 28, 28], 10));
    assert!(e.contains("does not exist") && e.contains("bundled"), "{e}");
}

#[test]
fn a_fashion_mnist_folder_is_read_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist");
    std::fs::copy(
        assets.join("t10k-first500-images-idx3-ubyte.gz"),
        dir.path().join("t10k-images-idx3-ubyte.gz"),
    )
    .unwrap();
    std::fs::copy(
        assets.join("t10k-first500-labels-idx1-ubyte.gz"),
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let set = open_data(&spec(dir.path()), &opts([1, 28, 28], 10)).unwrap();
    let bundled = open_data("bundled", &opts([1, 28, 28], 10)).unwrap();
    assert_eq!(set.len(), 500);
    let (a, b) = (
        set.load(&[0, 499], [1, 28, 28]),
        bundled.load(&[0, 499], [1, 28, 28]),
    );
    assert_eq!(a.images.data(), b.images.data());
    assert_eq!(a.labels, b.labels);
}

// --- Prefetch --------------------------------------------------------------------------------

/// A data set of `len` one-pixel examples whose value and label are the index; counts the
/// batches loaded and takes `delay` for each.
struct Counting {
    len: usize,
    loads: Arc<AtomicUsize>,
    delay: Duration,
}

impl Examples for Counting {
    fn len(&self) -> usize {
        self.len
    }

    fn describe(&self) -> String {
        "counting".into()
    }

    fn path(&self, i: usize) -> Option<String> {
        Some(format!("#{i}"))
    }

    fn load(&self, indices: &[usize], _: [usize; 3]) -> Batch {
        self.loads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let values = indices.iter().map(|&i| i as f32).collect();
        Batch {
            indices: indices.to_vec(),
            paths: indices.iter().map(|&i| self.path(i)).collect(),
            images: Array::new(vec![indices.len(), 1, 1, 1], values).unwrap(),
            labels: indices.to_vec(),
            unreadable: Vec::new(),
        }
    }
}

#[test]
fn prefetch_returns_every_index_once_in_order() {
    let loads = Arc::new(AtomicUsize::new(0));
    let set = Arc::new(Counting {
        len: 100,
        loads: loads.clone(),
        delay: Duration::ZERO,
    });
    // A shuffled order, as a shard or a resumed run asks for.
    let order: Vec<usize> = (0..100).map(|i| (i * 37) % 100).collect();
    let batches: Vec<Batch> = Prefetch::start(set, order.clone(), 7, 2, [1, 1, 1])
        .unwrap()
        .collect();
    assert_eq!(batches.len(), 15);
    assert!(batches.iter().take(14).all(|b| b.len() == 7));
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, order);
    let values: Vec<usize> = batches
        .iter()
        .flat_map(|b| {
            b.images
                .data()
                .iter()
                .map(|&v| v as usize)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(values, order);
    assert_eq!(loads.load(Ordering::SeqCst), 15);
}

#[test]
fn prefetch_stops_decoding_when_dropped() {
    let loads = Arc::new(AtomicUsize::new(0));
    let set = Arc::new(Counting {
        len: 1000,
        loads: loads.clone(),
        delay: Duration::from_millis(5),
    });
    let mut prefetch = Prefetch::start(set, (0..1000).collect(), 10, 2, [1, 1, 1]).unwrap();
    let first = prefetch.next().unwrap();
    assert_eq!(first.indices, (0..10).collect::<Vec<_>>());
    drop(prefetch);
    std::thread::sleep(Duration::from_millis(100));
    let after_drop = loads.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    // One taken, two queued, one being decoded when the channel closed: then nothing more
    // of the 100 batches.
    assert!(after_drop <= 4, "{after_drop} batches loaded");
    assert_eq!(loads.load(Ordering::SeqCst), after_drop);
}

#[test]
fn open_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    std::fs::write(&weights, b"x").unwrap();
    assert!(matches!(
        open_data(&spec(&weights), &opts([3, 4, 4], 2)),
        Err(DataError::UnknownKind { .. })
    ));
    let photo = dir.path().join("cat.jpg");
    std::fs::write(&photo, b"x").unwrap();
    assert!(err(&spec(&photo), &opts([3, 4, 4], 2)).contains("advlens attack --image"));
}

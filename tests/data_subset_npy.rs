//! Point subsets, normalisation defaults and the .npy writer/reader.

use memprune::data::npy::{read_npy_f32, write_npy_f32, write_npy_i64};
use memprune::data::{DatasetKind, Normalization, Subset};

#[test]
fn ranges_first_and_random() {
    assert_eq!(Subset::range(3, 6, 10).unwrap().indices, vec![3, 4, 5]);
    assert_eq!(Subset::first(2, 10).unwrap().indices, vec![0, 1]);
    assert!(Subset::range(5, 11, 10).is_err());
    assert!(Subset::range(5, 5, 10).is_err());
    assert!(Subset::first(11, 10).is_err());

    let a = Subset::random(100, 42, 60_000).unwrap();
    assert_eq!(a, Subset::random(100, 42, 60_000).unwrap(), "reproducible");
    assert_ne!(a, Subset::random(100, 43, 60_000).unwrap(), "seeded");
    assert!(
        a.indices.windows(2).all(|w| w[0] < w[1]),
        "sorted and distinct"
    );
    assert!(a.indices.iter().all(|&i| i < 60_000));
    // Drawing everything is a permutation, sorted: every index once.
    assert_eq!(Subset::random(50, 1, 50).unwrap(), Subset::all(50));
    assert!(Subset::random(51, 1, 50).is_err());
    // Roughly uniform: points from both halves.
    assert!(a.indices.iter().any(|&i| i < 30_000) && a.indices.iter().any(|&i| i >= 30_000));
}

#[test]
fn subset_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("points.txt");
    let read = |text: &str| {
        std::fs::write(&p, text).unwrap();
        Subset::from_file(&p, 100)
    };
    assert_eq!(
        read("5 3,9\n\n  7 # comment 8\n").unwrap().indices,
        vec![5, 3, 9, 7]
    );
    assert_eq!(read("[4, 2,\n 99]").unwrap().indices, vec![4, 2, 99]);
    let err = |text: &str| format!("{:#}", read(text).unwrap_err());
    let e = err("1\n2\n1\n");
    assert!(
        e.contains("points.txt:3") && e.contains("duplicate index 1 (first on line 1)"),
        "{e}"
    );
    let e = err("1 2\n100\n");
    assert!(
        e.contains("points.txt:2") && e.contains("index 100 out of range"),
        "{e}"
    );
    let e = err("1 2.5\n");
    assert!(e.contains("points.txt:1") && e.contains("\"2.5\""), "{e}");
    let e = err("[1, -3]");
    assert!(e.contains("\"-3\""), "{e}");
    assert!(err("[1, [2]]").contains("not a non-negative integer"));
    assert!(err("[1, 2").contains("does not end"));
    assert!(err("# nothing\n").contains("no point indices"));
}

#[test]
fn normalisation_defaults_and_validation() {
    let m = Normalization::default_for(DatasetKind::Mnist, 1);
    assert_eq!((m.mean[0], m.std[0]), (0.1307, 0.3081));
    let f = Normalization::default_for(DatasetKind::FashionMnist, 1);
    assert_eq!((f.mean[0], f.std[0]), (0.2860, 0.3530));
    assert_eq!(
        Normalization::default_for(DatasetKind::Cifar10, 3).mean,
        vec![0.4914, 0.4822, 0.4465]
    );
    assert_eq!(
        Normalization::default_for(DatasetKind::Cifar100, 3).std,
        vec![0.2673, 0.2564, 0.2762]
    );
    assert_eq!(
        Normalization::default_for(DatasetKind::Folder, 3).mean,
        vec![0.485, 0.456, 0.406]
    );
    let u = Normalization::default_for(DatasetKind::Unknown, 1);
    assert_eq!((u.mean.clone(), u.std.clone()), (vec![0.5], vec![0.5]));
    for kind in [
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Folder,
    ] {
        for c in [1, 3] {
            Normalization::default_for(kind, c).validate(c).unwrap();
        }
    }
    assert!(m.validate(3).is_err());
    let bad = Normalization {
        mean: vec![0.5],
        std: vec![0.0],
    };
    assert!(bad.validate(1).unwrap_err().to_string().contains("std"));
    let bad = Normalization {
        mean: vec![f32::INFINITY],
        std: vec![1.0],
    };
    assert!(bad.validate(1).is_err());
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), m);
}

#[test]
fn npy_round_trip_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_npy_f32(&p, &[2, 3, 4], &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }"));
    assert!(header.ends_with('\n'));
    assert_eq!(bytes.len(), 10 + hlen + 24 * 4);
    assert_eq!(read_npy_f32(&p).unwrap(), (vec![2, 3, 4], data));

    write_npy_f32(&p, &[3], &[1.0, 2.0, 3.0]).unwrap();
    assert!(String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains("'shape': (3,)"));
    assert_eq!(read_npy_f32(&p).unwrap().0, vec![3]);
    assert!(write_npy_f32(&p, &[2, 2], &[1.0]).is_err());

    let q = dir.path().join("i.npy");
    write_npy_i64(&q, &[2], &[-1, 1 << 40]).unwrap();
    let b = std::fs::read(&q).unwrap();
    assert!(String::from_utf8_lossy(&b).contains("'<i8'"));
    assert_eq!(&b[b.len() - 8..], &(1i64 << 40).to_le_bytes());
    assert!(read_npy_f32(&q).is_err(), "dtype is checked");
}

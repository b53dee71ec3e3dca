//! `memprune experiment finetune` on the command line: the loading options every command
//! shares reach f and g, and `--help` shows the fine-tuning defaults.

mod common;
use common::{memprune, refused};

#[test]
fn finetune_takes_the_shared_loading_options() {
    // A key the embedded f does not hold: refused by the loader, before any work.
    let out = memprune(&[
        "experiment",
        "finetune",
        "--key",
        "student",
        "--epochs",
        "1",
    ]);
    refused(
        &out,
        &[
            "resnet9-simclr-f.safetensors",
            "no tensors under the key `student`",
        ],
    );
    let help = String::from_utf8(memprune(&["experiment", "finetune", "--help"]).stdout).unwrap();
    for flag in [
        "--prefix", "--key", "--stem", "--heads", "--tokens", "--pool",
    ] {
        assert!(help.contains(flag), "{flag} not in:\n{help}");
    }
}

#[test]
fn finetune_help_shows_its_defaults() {
    let help = String::from_utf8(memprune(&["experiment", "finetune", "--help"]).stdout).unwrap();
    let d = memprune::eval::finetune::FinetuneSettings::default();
    let seeds: Vec<String> = d.seeds.iter().map(|s| s.to_string()).collect();
    for (flag, default) in [
        ("--epochs", d.epochs.to_string()),
        ("--lr", d.lr.to_string()),
        ("--batch", d.batch.to_string()),
        ("--seeds", seeds.join(",")),
    ] {
        let at = help.find(&format!("{flag} <")).unwrap();
        let next = help[at + 2..]
            .find("\n      --")
            .map_or(help.len(), |n| at + 2 + n);
        assert!(
            help[at..next].contains(&format!("[default: {default}]")),
            "{flag}: no default {default} in:\n{}",
            &help[at..next]
        );
    }
}

#[test]
fn one_epoch_is_said_in_the_singular() {
    assert_eq!(memprune::report::finetune::epochs(1), "1 epoch");
    assert_eq!(memprune::report::finetune::epochs(10), "10 epochs");
}

//! The architecture families memprune reads, tried in this order, and the architectures
//! `memprune train` builds from scratch (each in its family's `*_init` file). Adding a family
//! is its own file plus one line here.

use crate::model::family::Family;
use crate::model::fresh::FreshArch;

pub static FAMILIES: &[&dyn Family] = &[
    &crate::model::resnet9::ResNet9Family,
    &crate::model::resnet9_authors::AuthorsResNet9Family,
    &crate::model::resnet::ResNetFamily,
    &crate::model::vit::VitFamily,
];

/// `--arch` of `memprune train`, in the order `--help` lists them; the first is the default.
pub static FRESH: &[&dyn FreshArch] = &[
    &crate::model::resnet9_init::RESNET9,
    &crate::model::resnet_init::RESNET18,
    &crate::model::resnet_init::RESNET34,
    &crate::model::resnet_init::RESNET50,
    &crate::model::vit_init::VIT,
];

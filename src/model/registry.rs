//! The architecture families memprune reads, tried in this order. Adding a family is its
//! own file plus one line here.

use crate::model::family::Family;

pub static FAMILIES: &[&dyn Family] = &[
    &crate::model::resnet9::ResNet9Family,
    &crate::model::resnet9_authors::AuthorsResNet9Family,
    &crate::model::resnet::ResNetFamily,
    &crate::model::vit::VitFamily,
];

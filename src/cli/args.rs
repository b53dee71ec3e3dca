//! The argument structs every command shares, one per concern.

use clap::Args;
use memprune::model::options::Tokens;
use memprune::model::resnet::Stem;
use memprune::model::LoadOptions;

#[derive(Args, Clone)]
pub struct LoadArgs {
    /// Strip exactly this prefix from tensor names (default: module., backbone., encoder.,
    /// model., repeatedly).
    #[arg(long)]
    prefix: Option<String>,
    /// Override the ResNet stem detection (by conv1's kernel size).
    #[arg(long, value_enum)]
    stem: Option<Stem>,
    /// Which state dict of a checkpoint holding several: a top-level key of the file
    /// (`state_dict`, `student`, ...), else a name prefix inside the dict chosen (DINOv2's
    /// `student`). Default: the top level when it holds tensors, else the only dict of
    /// tensors one level down, else `teacher`; several others are listed.
    #[arg(long)]
    key: Option<String>,
    /// ViT: attention heads per block (default: memprune's metadata, else the table of
    /// published ViTs; else guessed as width / 64, which scoring or pruning heads refuses).
    #[arg(long)]
    heads: Option<usize>,
    /// ViT: the tokens of each sub-layer output that LayerMem compares: `all` (every token
    /// flattened, the authors' LayerMem script) or `cls` (the class token).
    #[arg(long, value_enum, default_value_t = Tokens::All)]
    tokens: Tokens,
    /// ViT: the representation (`pool`): `cls` (the class token after `norm`) or `avg` (the
    /// mean of the patch tokens after `norm`, then `fc_norm` if present). Default: `avg` when
    /// the checkpoint has `fc_norm` (timm's global_pool='avg'), else `cls`.
    #[arg(long, value_enum)]
    pool: Option<memprune::model::options::VitPool>,
    /// Set by `measure layer`: a ViT's layers are its attention and MLP sub-layer outputs.
    #[arg(skip)]
    pub sub_layers_only: bool,
}

impl LoadArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            prefix: self.prefix.clone(),
            key: self.key.clone(),
            stem: self.stem,
            heads: self.heads,
            tokens: self.tokens,
            sub_layers_only: self.sub_layers_only,
            pool: self.pool,
        }
    }
}

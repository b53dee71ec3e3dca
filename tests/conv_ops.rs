//! memprune's CPU conv, batch norm, channel means and max pool against candle references.

use candle_core::{DType, Device, Result, Tensor, Var};
use memprune::model::batch_norm::{
    batch_norm_eval, batch_norm_train, channel_stats, fold_batch_norm,
};
use memprune::model::conv::{channel_means, conv2d, conv2d_bias_act, conv2d_stock, ConvParams};
use memprune::model::pool::{conv2d_bias_act_max_pool2, max_pool2d};

mod common;
use common::tensors::rel_err;

const TOL: f64 = 1e-4;

fn check(what: &str, a: &Tensor, b: &Tensor) {
    let e = rel_err(a, b);
    assert!(e < TOL, "{what}: max relative error {e:e}");
}

/// memprune's conv against candle's stock conv, to [`TOL`].
fn against_stock(what: &str, x: &Tensor, w: &Tensor, p: ConvParams) -> Result<()> {
    check(what, &conv2d(x, w, None, p)?, &conv2d_stock(x, w, None, p)?);
    Ok(())
}

/// `a` and `b`, two computations of one function of `x`, have the same gradient with
/// respect to `x` against one random cotangent, to [`TOL`].
fn same_gradient(what: &str, x: &Var, a: &Tensor, b: &Tensor) -> Result<()> {
    let c = Tensor::randn(0f32, 1., a.shape(), a.device())?;
    let ga = (a * &c)?.sum_all()?.backward()?;
    let gb = (b * &c)?.sum_all()?.backward()?;
    let x = x.as_tensor();
    check(what, ga.get(x).unwrap(), gb.get(x).unwrap());
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    p: ConvParams,
}

#[allow(clippy::too_many_arguments)]
fn case(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Case {
    Case {
        n,
        c,
        h,
        w,
        co,
        k,
        p: ConvParams {
            stride,
            padding,
            dilation,
            groups,
        },
    }
}

/// Forward and all gradients of memprune's conv vs candle's, for x built by `make_x`.
fn compare(
    cs: Case,
    bias: bool,
    relu: bool,
    make_x: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let dev = Device::Cpu;
    let x0 = Tensor::randn(0f32, 1., (cs.n, cs.c, cs.h, cs.w), &dev)?;
    let xv = Var::from_tensor(&x0)?;
    let wv = Var::randn(0f32, 0.3, (cs.co, cs.c / cs.p.groups, cs.k, cs.k), &dev)?;
    let bv = Var::randn(0f32, 1., cs.co, &dev)?;
    let x = make_x(xv.as_tensor())?;
    let b = bias.then(|| bv.as_tensor());
    let ours = if relu {
        conv2d_bias_act(&x, wv.as_tensor(), bv.as_tensor(), cs.p, true)?
    } else {
        conv2d(&x, wv.as_tensor(), b, cs.p)?
    };
    let mut refr = conv2d_stock(
        &x,
        wv.as_tensor(),
        if relu { Some(bv.as_tensor()) } else { b },
        cs.p,
    )?;
    if relu {
        refr = refr.relu()?;
    }
    let tag = format!("{cs:?} bias={bias} relu={relu}");
    check(&format!("forward {tag}"), &ours, &refr);
    let r = Tensor::randn(0f32, 1., ours.shape(), &dev)?;
    let g1 = (&ours * &r)?.sum_all()?.backward()?;
    let g2 = (&refr * &r)?.sum_all()?.backward()?;
    check(
        &format!("dx {tag}"),
        g1.get(xv.as_tensor()).unwrap(),
        g2.get(xv.as_tensor()).unwrap(),
    );
    check(
        &format!("dw {tag}"),
        g1.get(wv.as_tensor()).unwrap(),
        g2.get(wv.as_tensor()).unwrap(),
    );
    if bias || relu {
        check(
            &format!("db {tag}"),
            g1.get(bv.as_tensor()).unwrap(),
            g2.get(bv.as_tensor()).unwrap(),
        );
    }
    Ok(())
}

fn cases() -> Vec<Case> {
    vec![
        case(2, 3, 9, 9, 4, 3, 1, 1, 1, 1),
        // non-square (stride 1 only: candle's reference backward mis-sizes dx for non-square strided inputs)
        case(2, 3, 9, 12, 4, 3, 1, 1, 1, 1),
        case(2, 4, 11, 11, 6, 3, 2, 1, 1, 1),
        case(1, 5, 8, 8, 7, 1, 1, 0, 1, 1),
        case(3, 6, 9, 9, 5, 1, 2, 0, 1, 1),
        case(2, 3, 17, 17, 8, 7, 2, 3, 1, 1),
        case(1, 3, 22, 22, 4, 7, 2, 3, 1, 1),
        case(3, 6, 12, 12, 6, 3, 1, 2, 2, 1),
        case(2, 5, 13, 13, 4, 3, 2, 1, 2, 1),
        case(2, 8, 9, 9, 8, 3, 1, 1, 1, 8),
        case(2, 8, 10, 10, 16, 3, 2, 1, 1, 8),
        case(2, 8, 9, 9, 12, 3, 2, 1, 1, 4),
        case(1, 16, 4, 4, 32, 3, 1, 1, 1, 1),
        case(5, 4, 6, 6, 8, 3, 1, 0, 1, 1),
        case(5, 4, 7, 7, 8, 5, 3, 2, 1, 2),
        case(40, 8, 6, 6, 16, 3, 1, 1, 1, 1),
        case(33, 16, 4, 4, 16, 3, 1, 1, 1, 1),
        case(1, 2, 3, 3, 3, 3, 1, 0, 1, 1),
        // Winograd F(2x2, 3x3): odd maps, no padding, wide padding, one image.
        case(3, 16, 7, 7, 24, 3, 1, 1, 1, 1),
        case(2, 20, 5, 9, 16, 3, 1, 0, 1, 1),
        case(2, 16, 6, 6, 16, 3, 1, 2, 1, 1),
        case(1, 32, 3, 3, 16, 3, 1, 1, 1, 1),
        // Small maps as one dense product: 1x1, 2x2, 1x2, strided, dilated, 7x7.
        case(4, 16, 1, 1, 32, 3, 1, 1, 1, 1),
        case(4, 16, 2, 2, 32, 3, 1, 1, 1, 1),
        case(3, 8, 2, 2, 16, 3, 2, 1, 1, 1),
        case(2, 8, 1, 2, 8, 3, 1, 1, 1, 1),
        case(2, 4, 2, 2, 6, 3, 1, 2, 2, 1),
        case(2, 3, 2, 2, 4, 7, 2, 3, 1, 1),
        // More than 512 products per output with few output channels (the GEMM's k blocks).
        case(3, 64, 9, 9, 32, 3, 2, 1, 1, 1),
        case(2, 520, 3, 3, 16, 3, 1, 1, 1, 1),
        case(2, 130, 2, 2, 8, 3, 1, 1, 1, 1),
    ]
}

/// The cases above reach every forward algorithm.
#[test]
fn conv_cases_cover_every_algorithm() -> Result<()> {
    use memprune::model::conv::{forward_algorithm, ForwardAlgorithm as A};
    let mut seen = Vec::new();
    for cs in cases() {
        let wd = [cs.co, cs.c / cs.p.groups, cs.k, cs.k];
        seen.push(forward_algorithm(&[cs.n, cs.c, cs.h, cs.w], &wd, cs.p)?);
    }
    for a in [A::Im2col, A::Winograd, A::SmallMap] {
        let k = seen.iter().filter(|s| **s == a).count();
        assert!(k >= 4, "{a:?}: {k} cases");
    }
    // resnet18's layers at 32x32 and the paper ResNet9's at 28x28.
    let p1 = ConvParams {
        padding: 1,
        ..Default::default()
    };
    let p2 = ConvParams {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let chosen: [([usize; 4], [usize; 4], ConvParams, A); 6] = [
        ([8, 512, 1, 1], [512, 512, 3, 3], p1, A::SmallMap),
        ([8, 256, 2, 2], [512, 256, 3, 3], p2, A::SmallMap),
        ([8, 256, 2, 2], [256, 256, 3, 3], p1, A::SmallMap),
        ([8, 64, 8, 8], [64, 64, 3, 3], p1, A::Winograd),
        ([8, 128, 4, 4], [256, 128, 3, 3], p2, A::Im2col),
        ([8, 1, 28, 28], [32, 1, 3, 3], p1, A::Im2col),
    ];
    for (x, w, p, want) in chosen {
        assert_eq!(
            forward_algorithm(&x, &w, p)?,
            want,
            "input {x:?}, weight {w:?}"
        );
    }
    Ok(())
}

/// Every algorithm gives an image the same bits whatever the batch around it and the
/// number of threads.
#[test]
fn conv_bits_do_not_depend_on_batch_or_threads() -> Result<()> {
    let dev = Device::Cpu;
    for cs in cases().into_iter().filter(|c| c.p.groups == 1) {
        let x = Tensor::randn(0f32, 1., (9, cs.c, cs.h, cs.w), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (cs.co, cs.c, cs.k, cs.k), &dev)?;
        let b = Tensor::randn(0f32, 1., cs.co, &dev)?;
        let run = |x: &Tensor, threads: usize| -> Vec<u32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| conv2d_bias_act(x, &w, &b, cs.p, true))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect()
        };
        let all = run(&x, 2);
        let per = all.len() / 9;
        for (lo, len, threads) in [(0, 9, 1), (0, 1, 1), (3, 1, 2), (4, 5, 2), (2, 3, 1)] {
            let part = run(&x.narrow(0, lo, len)?, threads);
            assert!(
                part == all[lo * per..(lo + len) * per],
                "{cs:?}: images {lo}..{} with {threads} thread(s) differ from the batch of 9",
                lo + len
            );
        }
    }
    Ok(())
}

#[test]
fn conv_matches_candle() -> Result<()> {
    for cs in cases() {
        compare(cs, false, false, &|x| Ok(x.clone()))?;
        compare(cs, true, false, &|x| Ok(x.clone()))?;
    }
    Ok(())
}

#[test]
fn conv_bias_relu_fused() -> Result<()> {
    for cs in cases() {
        compare(cs, true, true, &|x| Ok(x.clone()))?;
    }
    Ok(())
}

#[test]
fn conv_non_contiguous_input() -> Result<()> {
    // x as a transposed view: stored (N, H, C, W), viewed as (N, C, H, W).
    let cs = case(3, 4, 8, 8, 6, 3, 1, 1, 1, 1);
    compare(cs, true, false, &|x| {
        x.transpose(1, 2)?.contiguous()?.transpose(1, 2)
    })?;
    // x narrowed along W (a strided view), then the conv on the narrow.
    let dev = Device::Cpu;
    let big = Tensor::randn(0f32, 1., (2, 4, 9, 12), &dev)?;
    let x = big.narrow(3, 2, 7)?;
    let w = Tensor::randn(0f32, 1., (5, 4, 3, 3), &dev)?;
    let p = ConvParams {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    against_stock("narrowed", &x, &w, p)?;
    let xt = big.transpose(2, 3)?; // (2, 4, 12, 9), non-contiguous
    against_stock("transposed", &xt, &w, p)?;
    Ok(())
}

#[test]
fn conv_other_dtype_falls_back() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1., (2, 3, 7, 7), &dev)?;
    let w = Tensor::randn(0f64, 1., (4, 3, 3, 3), &dev)?;
    let p = ConvParams {
        padding: 1,
        ..Default::default()
    };
    against_stock("f64", &x, &w, p)?;
    Ok(())
}

#[test]
fn conv_rejects_bad_shapes() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, None, ConvParams::default()).is_err());
}

#[test]
fn conv_channel_means() -> Result<()> {
    let dev = Device::Cpu;
    for shape in [(2, 3, 5, 7), (64, 32, 16, 16), (1, 1, 1, 1)] {
        let xv = Var::randn(1f32, 2., shape, &dev)?;
        let m = channel_means(xv.as_tensor())?;
        let r = xv.as_tensor().mean((2, 3))?;
        check("channel_means", &m, &r);
        same_gradient("channel_means grad", &xv, &m, &r)?;
    }
    // non-contiguous input
    let x = Tensor::randn(0f32, 1., (3, 5, 4, 6), &dev)?.transpose(2, 3)?;
    check("channel_means nc", &channel_means(&x)?, &x.mean((2, 3))?);
    Ok(())
}

#[test]
fn conv_batch_norm_train() -> Result<()> {
    let dev = Device::Cpu;
    for shape in [(4, 3, 5, 7), (16, 8, 8, 8), (8, 5, 1, 1)] {
        let c = shape.1;
        let xv = Var::from_tensor(&(Tensor::randn(0f32, 2., shape, &dev)? + 3.0)?)?;
        let gv = Var::from_tensor(&(Tensor::rand(0f32, 1., c, &dev)? + 0.5)?)?;
        let bv = Var::randn(0f32, 1., c, &dev)?;
        let eps = 1e-5;
        let x = xv.as_tensor();
        let rm = x.mean_keepdim((0, 2, 3))?;
        let xc = x.broadcast_sub(&rm)?;
        let rv = xc.sqr()?.mean_keepdim((0, 2, 3))?;
        let ry = xc
            .broadcast_div(&(&rv + eps)?.sqrt()?)?
            .broadcast_mul(&gv.as_tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&bv.as_tensor().reshape((1, c, 1, 1))?)?;
        let (sm, sv) = channel_stats(x)?;
        check("channel_stats mean", &sm, &rm.flatten_all()?);
        check("channel_stats var", &sv, &rv.flatten_all()?);
        // with and without the fused ReLU
        for relu in [false, true] {
            let (y, mean, var) =
                batch_norm_train(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), eps, relu)?;
            let ry = if relu { ry.relu()? } else { ry.clone() };
            check("bn y", &y, &ry);
            check("bn mean", &mean, &rm.flatten_all()?);
            check("bn var (biased)", &var, &rv.flatten_all()?);
            let r = Tensor::randn(0f32, 1., shape, &dev)?;
            let g1 = (&y * &r)?.sum_all()?.backward()?;
            let g2 = (&ry * &r)?.sum_all()?.backward()?;
            for (name, v) in [("dx", &xv), ("dgamma", &gv), ("dbeta", &bv)] {
                check(
                    &format!("bn {name} {shape:?} relu {relu}"),
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
            }
        }
        // eval mode and folding
        let rmean = Tensor::randn(0f32, 0.1, c, &dev)?;
        let rvar = (Tensor::rand(0f32, 1., c, &dev)? + 0.5)?;
        let ye = batch_norm_eval(x, gv.as_tensor(), bv.as_tensor(), &rmean, &rvar, eps)?;
        let re = x
            .broadcast_sub(&rmean.reshape((1, c, 1, 1))?)?
            .broadcast_div(&(&rvar + eps)?.sqrt()?.reshape((1, c, 1, 1))?)?
            .broadcast_mul(&gv.as_tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&bv.as_tensor().reshape((1, c, 1, 1))?)?;
        check("bn eval", &ye, &re);
        let w = Tensor::randn(0f32, 1., (c, c, 3, 3), &dev)?;
        let p = ConvParams {
            padding: 1,
            ..Default::default()
        };
        let (wf, bf) =
            fold_batch_norm(&w, None, gv.as_tensor(), bv.as_tensor(), &rmean, &rvar, eps)?;
        let yc = conv2d_stock(x, &w, None, p)?;
        let want = batch_norm_eval(&yc, gv.as_tensor(), bv.as_tensor(), &rmean, &rvar, eps)?;
        check("fold", &conv2d(x, &wf, Some(&bf), p)?, &want);
    }
    Ok(())
}

#[test]
fn conv_max_pool() -> Result<()> {
    let dev = Device::Cpu;
    let xv = Var::randn(0f32, 1., (3, 4, 8, 10), &dev)?;
    let y = max_pool2d(xv.as_tensor(), 2, 2, 0)?;
    check("pool2", &y, &xv.as_tensor().max_pool2d(2)?);
    // Reference with a plain max reduction (candle's max_pool2d backward scales by 1/4).
    let r = xv.as_tensor().reshape((3, 4, 4, 2, 5, 2))?.max(5)?.max(3)?;
    check("pool2 vs max", &y, &r);
    same_gradient("pool2 grad", &xv, &y, &r)?;
    // 3x3 stride 2 padding 1 (resnet stem): positive inputs so zero padding is -inf padding.
    let xv = Var::from_tensor(&(Tensor::rand(0f32, 1., (2, 3, 11, 12), &dev)? + 1.0)?)?;
    let y = max_pool2d(xv.as_tensor(), 3, 2, 1)?;
    let r = xv
        .as_tensor()
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride(3, 2)?;
    check("pool3", &y, &r);
    // odd size with 2x2: floor
    let x = Tensor::randn(0f32, 1., (1, 2, 7, 5), &dev)?;
    check("pool2 odd", &max_pool2d(&x, 2, 2, 0)?, &x.max_pool2d(2)?);
    Ok(())
}

/// The fused conv + 2x2 max pool (one pass where the conv is Winograd) gives the bits of the
/// conv followed by the pool, for even and odd maps, with and without ReLU, for every
/// batch slice and thread count; and falls back (same bits) where it does not apply or a
/// gradient is tracked.
#[test]
fn conv_max_pool_fused_matches_conv_then_pool() -> Result<()> {
    use memprune::model::conv::{forward_algorithm, ForwardAlgorithm as A};
    let dev = Device::Cpu;
    let p1 = ConvParams {
        padding: 1,
        ..Default::default()
    };
    let p0 = ConvParams::default();
    // (c, h, w, co, params): ResNet9's blocks 2, 5, 6 at 28x28 and odd/remainder shapes.
    let shapes = [
        (32, 28, 28, 64, p1),
        (64, 14, 14, 128, p1),
        (128, 7, 7, 256, p1),
        (16, 5, 9, 24, p1),
        (20, 6, 7, 19, p0),
        (8, 6, 6, 16, p1),
        (32, 2, 2, 16, p1),
    ];
    let mut fused_shapes = 0;
    for (c, h, w, co, p) in shapes {
        let x = Tensor::randn(0f32, 1., (5, c, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 0.2, (co, c, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 0.5, co, &dev)?;
        if forward_algorithm(x.dims(), wt.dims(), p)? == A::Winograd {
            fused_shapes += 1;
        }
        for relu in [true, false] {
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            let want = max_pool2d(&conv2d_bias_act(&x, &wt, &b, p, relu)?, 2, 2, 0)?;
            let got = conv2d_bias_act_max_pool2(&x, &wt, &b, p, relu)?;
            assert_eq!(got.dims(), want.dims(), "{c}x{h}x{w} -> {co}");
            assert_eq!(bits(&got), bits(&want), "{c}x{h}x{w} -> {co}, relu {relu}");
            let per = want.elem_count() / 5;
            for (lo, len, threads) in [(0, 1, 1), (1, 3, 2), (4, 1, 2)] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let part = pool.install(|| {
                    conv2d_bias_act_max_pool2(&x.narrow(0, lo, len)?, &wt, &b, p, relu)
                })?;
                assert!(
                    bits(&part) == bits(&want)[lo * per..(lo + len) * per],
                    "{c}x{h}x{w}: images {lo}..{} with {threads} thread(s)",
                    lo + len
                );
            }
            // A tracked input takes the unfused ops (which have a backward).
            let xv = Var::from_tensor(&x)?;
            let tracked = conv2d_bias_act_max_pool2(xv.as_tensor(), &wt, &b, p, relu)?;
            assert_eq!(bits(&tracked), bits(&want));
            let grads = tracked.sum_all()?.backward()?;
            assert!(grads.get(xv.as_tensor()).is_some());
        }
    }
    assert!(
        fused_shapes >= 5,
        "{fused_shapes} shapes take the fused pass"
    );
    Ok(())
}

//! torch.save-like files for the tests: a zip writer as torch.save's (stored entries, data
//! aligned to 64 bytes) and the pickles of small state dicts, well-formed or cut short.

pub fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in entries {
        let off = out.len();
        let pad = (64 - (off + 30 + name.len()) % 64) % 64;
        let le16 = |v: usize| (v as u16).to_le_bytes();
        let le32 = |v: usize| (v as u32).to_le_bytes();
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(le32(data.len()));
        out.extend(le32(data.len()));
        out.extend(le16(name.len()));
        out.extend(le16(pad));
        out.extend(name.as_bytes());
        out.extend(vec![0u8; pad]);
        out.extend(data);
        cd.extend(0x0201_4b50u32.to_le_bytes());
        cd.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend(le32(data.len()));
        cd.extend(le32(data.len()));
        cd.extend(le16(name.len()));
        cd.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend(le32(off));
        cd.extend(name.as_bytes());
    }
    let cd_off = out.len();
    out.extend(&cd);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((cd.len() as u32).to_le_bytes());
    out.extend((cd_off as u32).to_le_bytes());
    out.extend([0, 0]);
    out
}

pub fn st(x: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((x.len() as u32).to_le_bytes());
    v.extend(x.as_bytes());
    v
}

/// `{name: _rebuild_tensor_v2((storage, FloatStorage, "0", cpu, n), 0, shape, stride)}`,
/// with `rebuild_args`/`pid_fields` cut short when asked.
pub fn state_pickle(name: &str, shape: &[u32], rebuild_args: usize, pid_fields: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(st(name));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    let mut pid = vec![b'('];
    let fields: [Vec<u8>; 5] = [
        st("storage"),
        b"ctorch\nFloatStorage\n".to_vec(),
        st("0"),
        st("cpu"),
        vec![b'K', 4],
    ];
    for f in fields.iter().take(pid_fields) {
        pid.extend(f);
    }
    pid.extend(b"tQ");
    let mut size = vec![b'('];
    let mut stride = vec![b'('];
    let mut acc = 1u64;
    let mut strides = Vec::new();
    for &d in shape.iter().rev() {
        strides.push(acc.min(1 << 30) as u32);
        acc = acc.saturating_mul(d as u64);
    }
    strides.reverse();
    for (&d, &s) in shape.iter().zip(&strides) {
        size.push(b'J');
        size.extend(d.to_le_bytes());
        stride.push(b'J');
        stride.extend(s.to_le_bytes());
    }
    size.push(b't');
    stride.push(b't');
    let args = [pid, vec![b'K', 0], size, stride, vec![0x89]];
    for a in args.iter().take(rebuild_args) {
        p.extend(a);
    }
    p.extend(b"tRu.");
    p
}

pub fn torch_zip(stem: &str, pickle: Vec<u8>) -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    zip(&[
        (format!("{stem}/data.pkl"), pickle),
        (format!("{stem}/byteorder"), b"little".to_vec()),
        (format!("{stem}/data/0"), data),
    ])
}

/// `{key: <the dict of `inner`>}`: a state dict nested under a key, as Lightning saves.
pub fn nested(key: &str, inner: Vec<u8>) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(st(key));
    // `inner` without its protocol header and final STOP.
    p.extend(&inner[2..inner.len() - 1]);
    p.extend(b"u.");
    p
}

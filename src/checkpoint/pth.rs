//! A bounded reader for PyTorch `torch.save` zip files (state dicts), in place of candle's
//! pickle reader, which panics, aborts or overflows its stack on malicious files. It reads
//! the zip's central directory itself (stored entries, ZIP64 included: what torch writes),
//! runs the subset of the pickle machine that `torch.save` emits with hard bounds (nesting
//! depth, stack and memo sizes; memo references share, never copy, so a "billion laughs"
//! memo stays as small as the file), and checks every tensor's declared shape and strides
//! against the size of its own storage entry before anything is allocated. Every failure is
//! an error naming the file; nothing is printed.

use crate::checkpoint::container::RawTensors;
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of tuples, lists and dicts a checkpoint may declare (state dicts need 5).
pub const MAX_DEPTH: usize = 100;
/// Most entries on the pickle stack at once.
const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 22;

/// A legacy (pre-1.6, non-zip) `torch.save` file: a bare pickle stream.
pub fn is_legacy(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1])
}

// ---------------------------------------------------------------------------------------
// Zip: the central directory of stored entries.

struct Entry {
    name: String,
    method: u16,
    size: u64,
    compressed: u64,
    local_offset: u64,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| anyhow!("truncated zip structure"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| anyhow!("truncated zip structure"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .ok_or_else(|| anyhow!("truncated zip structure"))
}

fn usize_of(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| anyhow!("zip offset {v} out of range"))
}

/// The entries of the zip in `file`.
fn central_directory(file: &[u8]) -> Result<Vec<Entry>> {
    // The end-of-central-directory record: in the last 64 KiB + 22 bytes.
    let lo = file.len().saturating_sub(65_557);
    let eocd = (lo..file.len().saturating_sub(21))
        .rev()
        .find(|&i| file[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| anyhow!("not a zip archive (no end-of-central-directory record)"))?;
    let mut count = u16_at(file, eocd + 10)? as u64;
    let mut cd_size = u32_at(file, eocd + 12)? as u64;
    let mut cd_offset = u32_at(file, eocd + 16)? as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // ZIP64: a locator just before the record points at the ZIP64 record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| file[l..].starts_with(b"PK\x06\x07"))
            .ok_or_else(|| anyhow!("ZIP64 archive without its locator"))?;
        let rec = usize_of(u64_at(file, loc + 8)?)?;
        if !file
            .get(rec..)
            .is_some_and(|r| r.starts_with(b"PK\x06\x06"))
        {
            bail!("ZIP64 end-of-central-directory record missing");
        }
        count = u64_at(file, rec + 32)?;
        cd_size = u64_at(file, rec + 40)?;
        cd_offset = u64_at(file, rec + 48)?;
    }
    let start = usize_of(cd_offset)?;
    let end = start
        .checked_add(usize_of(cd_size)?)
        .filter(|&e| e <= file.len())
        .ok_or_else(|| anyhow!("the zip's central directory lies outside the file"))?;
    // Each central directory entry takes at least 46 bytes.
    if count > (cd_size / 46) {
        bail!("the zip declares {count} entries, more than its central directory holds");
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = start;
    for _ in 0..count {
        if at + 46 > end || u32_at(file, at)? != 0x0201_4b50 {
            bail!("corrupt zip central directory");
        }
        let method = u16_at(file, at + 10)?;
        let mut compressed = u32_at(file, at + 20)? as u64;
        let mut size = u32_at(file, at + 24)? as u64;
        let name_len = u16_at(file, at + 28)? as usize;
        let extra_len = u16_at(file, at + 30)? as usize;
        let comment_len = u16_at(file, at + 32)? as usize;
        let mut local_offset = u32_at(file, at + 42)? as u64;
        let name_at = at + 46;
        let extra_at = name_at + name_len;
        let next = extra_at + extra_len + comment_len;
        if next > end {
            bail!("corrupt zip central directory");
        }
        let name = String::from_utf8_lossy(&file[name_at..extra_at]).into_owned();
        // ZIP64 extra field: 8-byte values for each 32-bit field that is all ones.
        let mut e = extra_at;
        while e + 4 <= extra_at + extra_len {
            let id = u16_at(file, e)?;
            let len = u16_at(file, e + 2)? as usize;
            let body = e + 4;
            if body + len > extra_at + extra_len {
                break;
            }
            if id == 1 {
                let mut p = body;
                for field in [&mut size, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF && p + 8 <= body + len {
                        *field = u64_at(file, p)?;
                        p += 8;
                    }
                }
            }
            e = body + len;
        }
        entries.push(Entry {
            name,
            method,
            size,
            compressed,
            local_offset,
        });
        at = next;
    }
    Ok(entries)
}

/// The bytes of a stored entry.
fn entry_data<'a>(file: &'a [u8], e: &Entry) -> Result<&'a [u8]> {
    if e.method != 0 {
        bail!(
            "zip entry {} is compressed (method {}); torch.save stores entries uncompressed",
            e.name,
            e.method
        );
    }
    if e.size != e.compressed {
        bail!("zip entry {}: stored sizes disagree", e.name);
    }
    let h = usize_of(e.local_offset)?;
    if u32_at(file, h)? != 0x0403_4b50 {
        bail!("zip entry {}: no local header at its offset", e.name);
    }
    let name_len = u16_at(file, h + 26)? as usize;
    let extra_len = u16_at(file, h + 28)? as usize;
    let start = h + 30 + name_len + extra_len;
    start
        .checked_add(usize_of(e.size)?)
        .and_then(|end| file.get(start..end))
        .ok_or_else(|| anyhow!("zip entry {} extends past the end of the file", e.name))
}

// ---------------------------------------------------------------------------------------
// Pickle: the subset torch.save writes.

/// A pickled value. Containers are shared (`Rc`), so memo references cost nothing; each
/// carries its nesting depth, bounded by [`MAX_DEPTH`].
#[derive(Debug, Clone)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Global(Rc<str>, Rc<str>),
    Tuple(Rc<Vec<Obj>>, usize),
    List(Rc<Vec<Obj>>, usize),
    Dict(Rc<Vec<(Obj, Obj)>>, usize),
    /// `callable(*args)`, kept unevaluated; `state` from BUILD.
    Reduce(Rc<(Obj, Obj, Option<Obj>)>, usize),
    PersId(Rc<Obj>, usize),
    Mark,
}

impl Obj {
    fn depth(&self) -> usize {
        match self {
            Obj::Tuple(_, d)
            | Obj::List(_, d)
            | Obj::Dict(_, d)
            | Obj::Reduce(_, d)
            | Obj::PersId(_, d) => *d,
            _ => 0,
        }
    }
}

fn depth_of<'a>(items: impl Iterator<Item = &'a Obj>) -> Result<usize> {
    let d = items.map(|o| o.depth()).max().unwrap_or(0) + 1;
    if d > MAX_DEPTH {
        bail!("the pickle nests deeper than {MAX_DEPTH} levels");
    }
    Ok(d)
}

fn tuple(v: Vec<Obj>) -> Result<Obj> {
    let d = depth_of(v.iter())?;
    Ok(Obj::Tuple(Rc::new(v), d))
}

struct Machine<'a> {
    code: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    /// The memo keys that hold each container (by its `Rc`'s address): pickle memoises a
    /// dict, list or object when it creates it and fills it afterwards (SETITEMS, APPENDS,
    /// BUILD), so those entries must see the filled container, not a copy of the empty one.
    memo_holders: HashMap<usize, Vec<u32>>,
}

/// The address of a fillable container's shared contents (dicts, lists, objects).
fn container_addr(o: &Obj) -> Option<usize> {
    match o {
        Obj::Dict(d, _) => Some(Rc::as_ptr(d) as *const u8 as usize),
        Obj::List(l, _) => Some(Rc::as_ptr(l) as *const u8 as usize),
        Obj::Reduce(r, _) => Some(Rc::as_ptr(r) as *const u8 as usize),
        _ => None,
    }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.code.len())
            .ok_or_else(|| anyhow!("the pickle ends in the middle of an opcode"))?;
        let s = &self.code[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.code[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("the pickle ends inside a GLOBAL"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| anyhow!("GLOBAL is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn push(&mut self, o: Obj) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            bail!("the pickle's stack grows past {MAX_STACK} entries");
        }
        self.stack.push(o);
        Ok(())
    }
    fn pop(&mut self) -> Result<Obj> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("the pickle pops past a MARK");
        }
        self.stack
            .pop()
            .ok_or_else(|| anyhow!("the pickle pops an empty stack"))
    }
    fn top(&mut self) -> Result<&mut Obj> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("the pickle reads past a MARK");
        }
        self.stack
            .last_mut()
            .ok_or_else(|| anyhow!("the pickle reads an empty stack"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Obj>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| anyhow!("the pickle closes a MARK it never opened"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }
    fn memo_put(&mut self, k: u32) -> Result<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&k) {
            bail!("the pickle's memo grows past {MAX_MEMO} entries");
        }
        if let Some(old) = self.memo.get(&k).and_then(container_addr) {
            if let Some(keys) = self.memo_holders.get_mut(&old) {
                keys.retain(|&x| x != k);
            }
        }
        if let Some(addr) = container_addr(&v) {
            self.memo_holders.entry(addr).or_default().push(k);
        }
        self.memo.insert(k, v);
        Ok(())
    }
    /// Before the container on top of the stack is filled: its memo entries let go of it,
    /// so that `Rc::make_mut` fills it in place (a copy would leave them empty).
    fn detach_memo(&mut self) -> Result<Vec<u32>> {
        let keys = container_addr(self.top()?)
            .and_then(|a| self.memo_holders.remove(&a))
            .unwrap_or_default();
        for k in &keys {
            self.memo.insert(*k, Obj::None);
        }
        Ok(keys)
    }
    /// After filling: the memo entries hold the filled container again.
    fn reattach_memo(&mut self, keys: Vec<u32>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let v = self.top()?.clone();
        if let Some(addr) = container_addr(&v) {
            self.memo_holders.entry(addr).or_default().extend(&keys);
        }
        for k in keys {
            self.memo.insert(k, v.clone());
        }
        Ok(())
    }
    fn memo_get(&mut self, k: u32) -> Result<()> {
        let v = self
            .memo
            .get(&k)
            .cloned()
            .ok_or_else(|| anyhow!("the pickle refers to memo entry {k}, never stored"))?;
        self.push(v)
    }
    fn string(&mut self, n: usize) -> Result<Obj> {
        let s = self.take(n)?;
        let s = std::str::from_utf8(s).map_err(|_| anyhow!("a pickled string is not UTF-8"))?;
        Ok(Obj::Str(s.into()))
    }

    fn set_items(&mut self, items: Vec<Obj>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            bail!("SETITEMS with an odd number of items");
        }
        let held = self.detach_memo()?;
        self.set_items_detached(items)?;
        self.reattach_memo(held)
    }

    fn set_items_detached(&mut self, items: Vec<Obj>) -> Result<()> {
        let target = self.top()?;
        match target {
            Obj::Dict(d, depth) => {
                let add = depth_of(items.iter())?;
                let v = Rc::make_mut(d);
                let mut it = items.into_iter();
                while let (Some(k), Some(val)) = (it.next(), it.next()) {
                    v.push((k, val));
                }
                *depth = (*depth).max(add);
            }
            // An OrderedDict() being filled: keep its items as the state.
            Obj::Reduce(r, depth) => {
                let add = depth_of(items.iter())?;
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(val)) = (it.next(), it.next()) {
                    pairs.push((k, val));
                }
                let r = Rc::make_mut(r);
                match &mut r.2 {
                    Some(Obj::Dict(d, _)) => Rc::make_mut(d).extend(pairs),
                    other => *other = Some(Obj::Dict(Rc::new(pairs), add)),
                }
                *depth = (*depth).max(add + 1);
                if *depth > MAX_DEPTH {
                    bail!("the pickle nests deeper than {MAX_DEPTH} levels");
                }
            }
            _ => bail!("SETITEMS on something that is not a dict"),
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Obj>) -> Result<()> {
        let add = depth_of(items.iter())?;
        let held = self.detach_memo()?;
        match self.top()? {
            Obj::List(l, depth) => {
                Rc::make_mut(l).extend(items);
                *depth = (*depth).max(add);
            }
            _ => bail!("APPEND on something that is not a list"),
        }
        self.reattach_memo(held)
    }

    fn run(&mut self) -> Result<Obj> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                } // PROTO
                0x95 => {
                    self.u64()?;
                } // FRAME
                b'.' => return self.pop(), // STOP
                b'(' => {
                    if self.marks.len() >= MAX_DEPTH {
                        bail!("the pickle nests MARKs deeper than {MAX_DEPTH}");
                    }
                    self.marks.push(self.stack.len())
                }
                b'}' => self.push(Obj::Dict(Rc::new(Vec::new()), 1))?,
                b']' => self.push(Obj::List(Rc::new(Vec::new()), 1))?,
                b')' => self.push(tuple(Vec::new())?)?,
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Obj::Int(v as i64))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement, up to 8 bytes here.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        bail!("a pickled integer of {n} bytes");
                    }
                    let mut a = [0u8; 8];
                    a[..n].copy_from_slice(b);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        a[n..].iter_mut().for_each(|x| *x = 0xFF);
                    }
                    self.push(Obj::Int(i64::from_le_bytes(a)))?
                }
                b'G' => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(self.take(8)?);
                    self.push(Obj::Float(f64::from_be_bytes(a)))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                0x8d => {
                    let n = usize_of(self.u64()?)?;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.push(Obj::Bytes(b.into()))?
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(Obj::Bytes(b.into()))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global(module.into(), name.into()))?
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Obj::Str(m), Obj::Str(n)) => self.push(Obj::Global(m, n))?,
                        _ => bail!("STACK_GLOBAL of something other than two strings"),
                    }
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(tuple(items)?)?
                }
                0x85 => {
                    let a = self.pop()?;
                    self.push(tuple(vec![a])?)?
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(tuple(vec![a, b])?)?
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(tuple(vec![a, b, c])?)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let d = depth_of(items.iter())?;
                    self.push(Obj::List(Rc::new(items), d))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Dict(Rc::new(Vec::new()), 1))?;
                    self.set_items(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'R' | 0x81 => {
                    // REDUCE, NEWOBJ
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let d = depth_of([&callable, &args].into_iter())?;
                    self.push(Obj::Reduce(Rc::new((callable, args, None)), d))?
                }
                b'b' => {
                    // BUILD: the state goes beside the object.
                    let state = self.pop()?;
                    let add = depth_of(std::iter::once(&state))?;
                    let held = self.detach_memo()?;
                    match self.top()? {
                        // An OrderedDict's state is its attributes (a state dict's
                        // `_metadata`), set after its items: the items stay.
                        Obj::Reduce(r, _) if is_global(&r.0, "collections", "OrderedDict") => {}
                        Obj::Reduce(r, depth) => {
                            Rc::make_mut(r).2 = Some(state);
                            *depth = (*depth).max(add);
                        }
                        _ => bail!("BUILD on something that is not an object"),
                    }
                    self.reattach_memo(held)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let d = depth_of(std::iter::once(&pid))?;
                    self.push(Obj::PersId(Rc::new(pid), d))?
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?
                }
                other => bail!(
                    "pickle opcode 0x{other:02x} at byte {} is not part of torch.save's format",
                    self.pos - 1
                ),
            }
        }
    }
}

/// Runs the pickle `code` (torch.save's subset) to its value.
pub fn unpickle(code: &[u8]) -> Result<Obj> {
    Ok(unpickle_prefix(code)?.0)
}

/// Runs the pickle at the start of `code` to its STOP: its value and the bytes it took
/// (a legacy torch.save file is several pickles in a row).
fn unpickle_prefix(code: &[u8]) -> Result<(Obj, usize)> {
    let mut m = Machine {
        code,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        memo_holders: HashMap::new(),
    };
    let v = m.run()?;
    if matches!(v, Obj::Mark) {
        bail!("the pickle's value is a MARK");
    }
    Ok((v, m.pos))
}

// ---------------------------------------------------------------------------------------
// State dicts.

/// The (key, value) items of a dict or an OrderedDict.
fn dict_items(o: &Obj) -> Option<&[(Obj, Obj)]> {
    match o {
        Obj::Dict(d, _) => Some(d),
        Obj::Reduce(r, _) => match (&r.0, &r.2) {
            (Obj::Global(m, n), Some(Obj::Dict(d, _)))
                if &**m == "collections" && &**n == "OrderedDict" =>
            {
                Some(d)
            }
            (Obj::Global(m, n), None) if &**m == "collections" && &**n == "OrderedDict" => {
                Some(&[])
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_global(o: &Obj, module: &str, name: &str) -> bool {
    matches!(o, Obj::Global(m, n) if &**m == module && &**n == name)
}

fn tuple_items(o: &Obj) -> Option<&[Obj]> {
    match o {
        Obj::Tuple(t, _) => Some(t),
        _ => None,
    }
}

fn ints(o: &Obj, what: &str) -> Result<Vec<usize>> {
    tuple_items(o)
        .ok_or_else(|| anyhow!("its {what} is not a tuple"))?
        .iter()
        .map(|v| match v {
            Obj::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => Err(anyhow!("its {what} holds a value that is not a size")),
        })
        .collect()
}

/// A tensor as the pickle declares it.
struct TensorRef {
    storage_key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class: &Obj) -> Result<DType> {
    let name = match class {
        Obj::Global(m, n) if &**m == "torch" => n.clone(),
        _ => bail!("its storage type is not a torch storage class"),
    };
    Ok(match &*name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" => DType::U8,
        other => bail!("its storage type {other} is not one memprune reads"),
    })
}

/// `Some` when `value` is a tensor (`_rebuild_tensor_v2`, possibly in `_rebuild_parameter`),
/// `None` when it is something else (a number, a string: kept out of the state dict).
fn tensor_ref(value: &Obj) -> Result<Option<TensorRef>> {
    let Obj::Reduce(r, _) = value else {
        return Ok(None);
    };
    let (callable, args) = (&r.0, &r.1);
    if is_global(callable, "torch._utils", "_rebuild_parameter")
        || is_global(callable, "torch._utils", "_rebuild_parameter_with_state")
    {
        let inner = tuple_items(args)
            .and_then(|a| a.first())
            .ok_or_else(|| anyhow!("_rebuild_parameter without arguments"))?;
        return tensor_ref(inner);
    }
    if !is_global(callable, "torch._utils", "_rebuild_tensor_v2") {
        return Ok(None);
    }
    let a = tuple_items(args)
        .ok_or_else(|| anyhow!("_rebuild_tensor_v2's arguments are not a tuple"))?;
    if a.len() < 4 {
        bail!(
            "_rebuild_tensor_v2 with {} arguments (storage, offset, size, stride needed)",
            a.len()
        );
    }
    let Obj::PersId(pid, _) = &a[0] else {
        bail!("_rebuild_tensor_v2 without a storage reference");
    };
    let pid = tuple_items(pid).ok_or_else(|| anyhow!("a storage reference is not a tuple"))?;
    if pid.len() < 3 {
        bail!(
            "a storage reference with {} fields (\"storage\", type, key needed)",
            pid.len()
        );
    }
    if !matches!(&pid[0], Obj::Str(s) if &**s == "storage") {
        bail!("a persistent reference that is not a storage");
    }
    let dtype = storage_dtype(&pid[1])?;
    let storage_key = match &pid[2] {
        Obj::Str(s) => s.to_string(),
        _ => bail!("a storage key that is not a string"),
    };
    let offset = match &a[1] {
        Obj::Int(i) if *i >= 0 => *i as usize,
        _ => bail!("a storage offset that is not a size"),
    };
    let shape = ints(&a[2], "size")?;
    let stride = ints(&a[3], "stride")?;
    if shape.len() != stride.len() {
        bail!(
            "a size of {} dimensions with a stride of {}",
            shape.len(),
            stride.len()
        );
    }
    Ok(Some(TensorRef {
        storage_key,
        dtype,
        offset,
        shape,
        stride,
    }))
}

/// Copies the tensor out of its storage bytes, after checking that every element it
/// declares lies inside them.
fn materialize(t: &TensorRef, storage: &[u8]) -> Result<Tensor> {
    let es = t.dtype.size_in_bytes();
    let stored = storage.len() / es;
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("its size {:?} overflows", t.shape))?;
    if numel > 0 {
        // The last element it reaches, computed without overflow.
        let mut last = t.offset;
        for (&d, &s) in t.shape.iter().zip(&t.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| anyhow!("its strides overflow"))?;
        }
        if last >= stored || numel > stored {
            bail!(
                "it declares size {:?} (stride {:?}, offset {}) but its storage holds {stored} elements",
                t.shape,
                t.stride,
                t.offset
            );
        }
    }
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
            }
            expect = expect.saturating_mul(d);
        }
        ok
    };
    let bytes: Vec<u8> = if contiguous {
        storage[t.offset * es..(t.offset + numel) * es].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[at * es..(at + 1) * es]);
            for k in (0..idx.len()).rev() {
                idx[k] += 1;
                if idx[k] < t.shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        out
    };
    Ok(Tensor::from_raw_buffer(
        &bytes,
        t.dtype,
        &t.shape,
        &Device::Cpu,
    )?)
}

fn key_name(k: &Obj) -> String {
    match k {
        Obj::Str(s) => s.to_string(),
        Obj::Int(i) => i.to_string(),
        // Never Debug-print a key: shared containers could make that exponential.
        _ => "(a key that is not a string)".into(),
    }
}

/// What a pickle's value is, when it is not a dict: a whole `nn.Module` (an object whose
/// state has `_modules` or `_parameters`, named by its class), another object or call
/// (named by its callable), or nothing memprune can name. Read from the unevaluated value:
/// no pickled code runs to tell.
fn describe_non_dict(o: &Obj) -> String {
    let Obj::Reduce(r, _) = o else {
        return "holds no dict of tensors".into();
    };
    let callable = match &r.0 {
        Obj::Global(m, n) => format!("{m}.{n}"),
        // A legacy file refers to a module's class as ("module", class, file, source).
        Obj::PersId(pid, _) => match tuple_items(pid).and_then(|t| t.get(1)) {
            Some(Obj::Global(m, n)) => format!("{m}.{n}"),
            _ => "an unnamed class".into(),
        },
        _ => "an unnamed callable".into(),
    };
    let is_module = r.2.as_ref().and_then(dict_items).is_some_and(|items| {
        items
            .iter()
            .any(|(k, _)| matches!(k, Obj::Str(s) if &**s == "_modules" || &**s == "_parameters"))
    });
    if is_module {
        format!("holds a whole pickled nn.Module (`{callable}`), not a state dict: rebuilding a module runs the file's pickled code, which memprune never does")
    } else {
        format!(
            "holds a call of `{callable}`, not a dict of tensors (memprune runs no pickled code)"
        )
    }
}

/// The Python that turns a file memprune refuses (a legacy torch.save file, a whole pickled
/// module) into a state dict it reads; `torch.load(..., weights_only=False)` runs the file's
/// pickled code, so only for a file one trusts.
pub const CONVERT_HELP: &str = "re-save it in Python, for a file you trust (weights_only=False runs its pickled code): `obj = torch.load(\"IN.pth\", weights_only=False)` then `torch.save(obj.state_dict() if isinstance(obj, torch.nn.Module) else obj, \"OUT.pth\")`";

/// Names what a legacy (pre-1.6, non-zip) torch.save file holds, from its object pickle
/// (the fourth of the stream: magic number, protocol, system info, object), unevaluated.
fn describe_legacy(bytes: &[u8]) -> String {
    // The magic number is a 10-byte LONG1, beyond this reader's integers: skip its pickle.
    const MAGIC: [u8; 15] = [
        0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    if !bytes.starts_with(&MAGIC) {
        return String::new();
    }
    let mut at = MAGIC.len();
    let mut value = None;
    for _ in 0..3 {
        match bytes.get(at..).map(unpickle_prefix) {
            Some(Ok((v, n))) => {
                at += n;
                value = Some(v);
            }
            _ => return String::new(),
        }
    }
    match value {
        Some(v) if dict_items(&v).is_some() => " holding a state dict".into(),
        Some(v) => format!(" that {}", describe_non_dict(&v)),
        None => String::new(),
    }
}

/// The tensors of one dict of a torch.save file, by key (`None`: the top level).
pub struct PthDict {
    pub tensors: RawTensors,
    /// The top-level key of the dict read, when it is not the top level itself.
    pub key: Option<String>,
}

/// Reads the state dict of the torch.save zip in `bytes`, chosen as
/// [`crate::checkpoint::container::choose`] says. Errors do not name the file (the caller does).
pub fn read_state_dict(bytes: &[u8]) -> Result<RawTensors> {
    Ok(read_state_dict_keyed(bytes, None)?.tensors)
}

/// As [`read_state_dict`]; with `key`, the dict under that top-level key when there is one
/// (else the dict chosen without a key, `key` left to the caller to look for as a name
/// prefix, as in a DINOv2 training checkpoint's `model` dict of `teacher.*` names).
pub fn read_state_dict_keyed(bytes: &[u8], key: Option<&str>) -> Result<PthDict> {
    if is_legacy(bytes) {
        bail!(
            "a legacy (pre-1.6, non-zip) torch.save file{}; memprune reads torch.save's zip format (PyTorch 1.6 and later) and safetensors: {CONVERT_HELP}",
            describe_legacy(bytes)
        );
    }
    let entries = central_directory(bytes)?;
    let pkl = entries
        .iter()
        .find(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
        .ok_or_else(|| anyhow!("a zip without data.pkl: not a torch.save file"))?;
    let dir = pkl
        .name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();
    if let Some(b) = entries.iter().find(|e| e.name == format!("{dir}byteorder")) {
        if entry_data(bytes, b)? != b"little" {
            bail!("a big-endian torch.save file");
        }
    }
    let root = unpickle(entry_data(bytes, pkl)?)?;
    let top = match dict_items(&root) {
        Some(t) => t,
        None if matches!(root, Obj::Reduce(..)) => {
            bail!("data.pkl {}; {CONVERT_HELP}", describe_non_dict(&root))
        }
        None => bail!("data.pkl holds no dict of tensors"),
    };
    let count_tensors = |items: &[(Obj, Obj)]| -> Result<usize> {
        let mut n = 0;
        for (k, v) in items {
            if tensor_ref(v)
                .map_err(|e| anyhow!("tensor `{}`: {e}", key_name(k)))?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    };
    let keys_found = || {
        let keys: Vec<String> = top.iter().take(12).map(|(k, _)| key_name(k)).collect();
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    };
    // Every dict of tensors at the top level or one level down.
    let mut candidates = Vec::new();
    let mut dicts = Vec::new();
    let n_top = count_tensors(top)?;
    if n_top > 0 {
        candidates.push(crate::checkpoint::container::Candidate {
            key: None,
            tensors: n_top,
        });
        dicts.push(top);
    }
    for (k, v) in top {
        if let (Obj::Str(name), Some(items)) = (k, dict_items(v)) {
            let n = count_tensors(items)?;
            if n > 0 {
                candidates.push(crate::checkpoint::container::Candidate {
                    key: Some(name.to_string()),
                    tensors: n,
                });
                dicts.push(items);
            }
        }
    }
    if candidates.is_empty() {
        bail!(
            "no tensors at the top level nor in any dict one level down (top-level keys: {})",
            keys_found()
        );
    }
    let keyed = key.and_then(|k| candidates.iter().position(|c| c.key.as_deref() == Some(k)));
    if let (Some(k), None) = (key, keyed) {
        if let Some((_, v)) = top
            .iter()
            .find(|(name, _)| matches!(name, Obj::Str(s) if &**s == k))
        {
            if dict_items(v).is_some() {
                bail!("no tensors under the key `{k}`");
            }
        }
    }
    let at = match keyed {
        Some(i) => i,
        None => crate::checkpoint::container::choose(&candidates)?,
    };
    let chosen = dicts[at];
    let storages: HashMap<&str, &Entry> = entries
        .iter()
        .filter_map(|e| e.name.strip_prefix(&format!("{dir}data/")).map(|k| (k, e)))
        .collect();
    let mut out = Vec::with_capacity(chosen.len());
    for (k, v) in chosen {
        let Some(t) = tensor_ref(v).map_err(|e| anyhow!("tensor `{}`: {e}", key_name(k)))? else {
            continue;
        };
        let name = match k {
            Obj::Str(s) => s.to_string(),
            _ => bail!("a state dict key that is not a string"),
        };
        let entry = storages.get(t.storage_key.as_str()).ok_or_else(|| {
            anyhow!(
                "tensor `{name}`: storage {} missing from the zip",
                t.storage_key
            )
        })?;
        let data = entry_data(bytes, entry)?;
        let tensor = materialize(&t, data).map_err(|e| anyhow!("tensor `{name}`: {e}"))?;
        out.push((name, tensor));
    }
    Ok(PthDict {
        tensors: out,
        key: candidates[at].key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(o: &Obj) -> Vec<(String, Obj)> {
        dict_items(o)
            .unwrap()
            .iter()
            .map(|(k, v)| (key_name(k), v.clone()))
            .collect()
    }

    /// `torch.save({"a": d, "b": d})`: `d` is memoised when created, filled, then referenced
    /// again; both keys see the filled dict (they used to see an empty copy under "b").
    #[test]
    fn a_memoised_container_is_seen_filled_when_referenced_again() {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([b'X', 1, 0, 0, 0, b'a']);
        p.extend([b'}', b'q', 1, b'(', b'X', 1, 0, 0, 0, b'w', b'K', 5, b'u']);
        p.extend([b'X', 1, 0, 0, 0, b'b', b'h', 1]);
        // And a list memoised empty, appended to, then fetched again.
        p.extend([b'X', 1, 0, 0, 0, b'l', b']', b'q', 2, b'K', 7, b'a']);
        p.extend([b'X', 1, 0, 0, 0, b'm', b'h', 2, b'u', b'.']);
        let top = unpickle(&p).unwrap();
        let kv = items(&top);
        let names: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["a", "b", "l", "m"]);
        for (k, v) in &kv[..2] {
            let inner = items(v);
            assert_eq!(inner.len(), 1, "`{k}` is {v:?}");
            assert!(matches!(inner[0].1, Obj::Int(5)));
        }
        for (k, v) in &kv[2..] {
            match v {
                Obj::List(l, _) => assert!(matches!(l.as_slice(), [Obj::Int(7)]), "`{k}`"),
                other => panic!("`{k}` is {other:?}"),
            }
        }
    }
}

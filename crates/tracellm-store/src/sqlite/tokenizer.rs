//! FTS5's `unicode61` tokenizer with a fast path for ASCII text, registered on the indexer's
//! connection under the same name.
//!
//! Tokenizing was a third of what the indexer spends (unicode61 decodes and classifies each byte
//! through a loop built for any code point, and copies every token into a folding buffer). For
//! ASCII, unicode61's rules are simple: a token is a run of `[0-9A-Za-z]` and is folded to lower
//! case. This module finds those runs from bit masks of 64 bytes at a time, hands out tokens
//! without upper case straight from the text, and gives every stretch holding a non-ASCII byte
//! to unicode61 itself.
//!
//! Registered under unicode61's own name, it applies to the search tables as they are (no schema
//! change, no index to rebuild), and any connection without it (the `sqlite3` shell, the read
//! connections, an older build) tokenizes with the built-in unicode61 and gets the same terms:
//! `tests::the_same_terms_as_unicode61` compares the two over the same texts. The fast path is
//! taken only for the arguments the search table uses (`remove_diacritics`, which changes
//! nothing in ASCII); with `tokenchars`, `separators` or `categories` every text goes to
//! unicode61.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use rusqlite::Connection;
use rusqlite::ffi;

const NAME: &CStr = c"unicode61";

/// The callback FTS5 hands a tokenizer, through which it takes each token.
type TokenFn =
    unsafe extern "C" fn(*mut c_void, c_int, *const c_char, c_int, c_int, c_int) -> c_int;

/// What the FTS5 tables a connection writes keep of a document's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Where each token is (`detail = full`, the default): every token is given, in order.
    #[cfg_attr(not(test), allow(dead_code, reason = "the search tables keep terms only"))]
    Positions,
    /// Only which terms a row holds (`detail = none`, as the search table has it): a term a
    /// document has already given is not given again. FTS5 would look it up among its pending
    /// terms and find nothing to add, so the index is the same, for less work.
    TermsOnly,
}

/// The built-in unicode61, as FTS5 had it before ours was registered.
struct Module {
    builtin: ffi::fts5_tokenizer,
    user_data: *mut c_void,
    detail: Detail,
}

/// One tokenizer instance (one per FTS5 table and connection).
struct Instance {
    builtin: *mut ffi::Fts5Tokenizer,
    module: *const Module,
    /// The arguments leave unicode61's ASCII rules as they are.
    fast: bool,
    /// Where upper-case tokens are folded.
    fold: Vec<u8>,
    /// The terms the document being tokenized has given, when its table keeps terms only (and
    /// the arguments are the fast path's: with others, unicode61 gives every token).
    seen: Option<Seen>,
}

/// Registers the fast `unicode61` on `conn`, in front of the built-in one, which it wraps.
/// `detail` is what every FTS5 table that `conn` writes with it keeps: with
/// [`Detail::TermsOnly`], a table keeping positions would lose all but a term's first.
pub(crate) fn register(conn: &Connection, detail: Detail) -> rusqlite::Result<()> {
    // SAFETY: the handle stays open for the calls below; the API pointer FTS5 hands back lives
    // as long as the connection.
    unsafe {
        let api = fts5_api(conn)?;
        let create =
            (*api).xCreateTokenizer.ok_or_else(|| failure("fts5_api has no xCreateTokenizer"))?;
        let (builtin, user_data) = unicode61(api)?;
        let module = Box::into_raw(Box::new(Module { builtin, user_data, detail }));
        let mut ours = ffi::fts5_tokenizer {
            xCreate: Some(x_create),
            xDelete: Some(x_delete),
            xTokenize: Some(x_tokenize),
        };
        // FTS5 copies `ours`, and owns `module` from here: it frees it with the connection.
        let rc = create(api, NAME.as_ptr(), module.cast(), &mut ours, Some(x_destroy_module));
        if rc != ffi::SQLITE_OK {
            drop(Box::from_raw(module));
            return Err(failure("FTS5 refused the tokenizer"));
        }
    }
    Ok(())
}

/// The arguments the search table gives unicode61 (its `tokenize` option in the migrations).
pub(crate) const SEARCH_ARGS: [&CStr; 2] = [c"remove_diacritics", c"2"];

/// The terms the built-in unicode61, with `args`, makes of a word of a query: what FTS5 looks up
/// for it (folded to lower case, accents removed).
pub(crate) fn query_terms(
    conn: &Connection,
    args: &[&CStr],
    text: &str,
) -> rusqlite::Result<Vec<String>> {
    terms(conn, args, ffi::FTS5_TOKENIZE_QUERY | ffi::FTS5_TOKENIZE_PREFIX, text)
}

/// The terms the built-in unicode61, with `args`, makes of a document: what FTS5 indexes of it.
pub(crate) fn document_terms(
    conn: &Connection,
    args: &[&CStr],
    text: &str,
) -> rusqlite::Result<Vec<String>> {
    terms(conn, args, ffi::FTS5_TOKENIZE_DOCUMENT, text)
}

fn terms(
    conn: &Connection,
    args: &[&CStr],
    flags: c_int,
    text: &str,
) -> rusqlite::Result<Vec<String>> {
    unsafe extern "C" fn take(
        ctx: *mut c_void,
        _flags: c_int,
        token: *const c_char,
        n: c_int,
        _start: c_int,
        _end: c_int,
    ) -> c_int {
        // SAFETY: `ctx` is the vector below; FTS5 hands `n` bytes of token.
        unsafe {
            let token = std::slice::from_raw_parts(token.cast::<u8>(), n.max(0) as usize);
            (*ctx.cast::<Vec<String>>()).push(String::from_utf8_lossy(token).into_owned());
        }
        ffi::SQLITE_OK
    }
    let n_text = c_int::try_from(text.len()).map_err(|_| failure("text too long to tokenize"))?;
    // SAFETY: the handle stays open for the calls below; the tokenizer made is deleted before
    // returning, and `terms` outlives the tokenize call that fills it.
    unsafe {
        let (module, user_data) = unicode61(fts5_api(conn)?)?;
        let (Some(create), Some(delete), Some(tokenize)) =
            (module.xCreate, module.xDelete, module.xTokenize)
        else {
            return Err(failure("unicode61 lacks a function"));
        };
        let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        let mut tokenizer = ptr::null_mut();
        if create(user_data, argv.as_mut_ptr(), argv.len() as c_int, &mut tokenizer)
            != ffi::SQLITE_OK
        {
            return Err(failure("unicode61 refused its arguments"));
        }
        let mut terms: Vec<String> = Vec::new();
        let rc = tokenize(
            tokenizer,
            (&raw mut terms).cast(),
            flags,
            text.as_ptr().cast(),
            n_text,
            Some(take),
        );
        delete(tokenizer);
        if rc != ffi::SQLITE_OK {
            return Err(failure("unicode61 failed on a text"));
        }
        Ok(terms)
    }
}

/// The unicode61 tokenizer FTS5 holds under that name on the connection of `api`, and its
/// user data.
unsafe fn unicode61(
    api: *mut ffi::fts5_api,
) -> rusqlite::Result<(ffi::fts5_tokenizer, *mut c_void)> {
    // SAFETY: `api` is a live connection's FTS5 API (see `fts5_api`).
    unsafe {
        let find =
            (*api).xFindTokenizer.ok_or_else(|| failure("fts5_api has no xFindTokenizer"))?;
        let mut module = ffi::fts5_tokenizer { xCreate: None, xDelete: None, xTokenize: None };
        let mut user_data = ptr::null_mut();
        if find(api, NAME.as_ptr(), &mut user_data, &mut module) != ffi::SQLITE_OK {
            return Err(failure("FTS5 has no unicode61 tokenizer"));
        }
        Ok((module, user_data))
    }
}

fn failure(msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_ERROR), Some(msg.to_owned()))
}

/// The connection's FTS5 API, which SQLite gives through `SELECT fts5(?)` and a bound pointer.
unsafe fn fts5_api(conn: &Connection) -> rusqlite::Result<*mut ffi::fts5_api> {
    unsafe {
        let db = conn.handle();
        let mut stmt = ptr::null_mut();
        let rc = ffi::sqlite3_prepare_v2(
            db,
            c"SELECT fts5(?1)".as_ptr(),
            -1,
            &mut stmt,
            ptr::null_mut(),
        );
        if rc != ffi::SQLITE_OK {
            return Err(failure("cannot ask for the FTS5 API"));
        }
        let mut api: *mut ffi::fts5_api = ptr::null_mut();
        ffi::sqlite3_bind_pointer(stmt, 1, (&raw mut api).cast(), c"fts5_api_ptr".as_ptr(), None);
        ffi::sqlite3_step(stmt);
        ffi::sqlite3_finalize(stmt);
        if api.is_null() || (*api).iVersion < 2 {
            return Err(failure("FTS5 API unavailable"));
        }
        Ok(api)
    }
}

unsafe extern "C" fn x_destroy_module(module: *mut c_void) {
    // SAFETY: made by `register` with Box::into_raw, and FTS5 destroys it once.
    drop(unsafe { Box::from_raw(module.cast::<Module>()) });
}

unsafe extern "C" fn x_create(
    module: *mut c_void,
    args: *mut *const c_char,
    n_args: c_int,
    out: *mut *mut ffi::Fts5Tokenizer,
) -> c_int {
    // SAFETY: FTS5 passes the module registered with us, `n_args` valid C strings and an out
    // pointer; the built-in's functions are called as FTS5 would.
    unsafe {
        *out = ptr::null_mut();
        let module = module.cast_const().cast::<Module>();
        let Some(create) = (*module).builtin.xCreate else { return ffi::SQLITE_ERROR };
        let mut builtin = ptr::null_mut();
        // the built-in checks the arguments and answers any error in them
        let rc = create((*module).user_data, args, n_args, &mut builtin);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let args = if n_args > 0 { std::slice::from_raw_parts(args, n_args as usize) } else { &[] };
        let fast = args.chunks(2).all(|pair| {
            CStr::from_ptr(pair[0]).to_bytes().eq_ignore_ascii_case(b"remove_diacritics")
        });
        let seen = ((*module).detail == Detail::TermsOnly).then(Seen::new);
        let instance = Instance { builtin, module, fast, fold: Vec::with_capacity(64), seen };
        *out = Box::into_raw(Box::new(instance)).cast();
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_delete(tokenizer: *mut ffi::Fts5Tokenizer) {
    if tokenizer.is_null() {
        return;
    }
    // SAFETY: made by `x_create`, deleted once by FTS5.
    unsafe {
        let instance = Box::from_raw(tokenizer.cast::<Instance>());
        if let Some(delete) = (*instance.module).builtin.xDelete {
            delete(instance.builtin);
        }
    }
}

unsafe extern "C" fn x_tokenize(
    tokenizer: *mut ffi::Fts5Tokenizer,
    ctx: *mut c_void,
    flags: c_int,
    text: *const c_char,
    n_text: c_int,
    x_token: Option<TokenFn>,
) -> c_int {
    // SAFETY: FTS5 passes an instance made by `x_create` and `n_text` readable bytes.
    unsafe {
        let instance = &mut *tokenizer.cast::<Instance>();
        let Some(x_token) = x_token else { return ffi::SQLITE_ERROR };
        let Some(builtin) = (*instance.module).builtin.xTokenize else {
            return ffi::SQLITE_ERROR;
        };
        if !instance.fast {
            return builtin(instance.builtin, ctx, flags, text, n_text, Some(x_token));
        }
        if n_text <= 0 || text.is_null() {
            return ffi::SQLITE_OK;
        }
        // a document's tokens for a table that keeps terms only: each term given once, as far
        // as `seen` remembers (queries and highlight() take every token)
        let seen: *mut Seen = match instance.seen.as_mut() {
            Some(seen) if flags & ffi::FTS5_TOKENIZE_DOCUMENT != 0 => {
                if seen.start() {
                    seen
                } else {
                    ptr::null_mut()
                }
            }
            _ => ptr::null_mut(),
        };
        let bytes = std::slice::from_raw_parts(text.cast::<u8>(), n_text as usize);
        let delegate = |start: usize, end: usize| {
            let mut shifted =
                Shifted { ctx, x_token, base: start as c_int, seen, stopped: ffi::SQLITE_OK };
            let rc = builtin(
                instance.builtin,
                (&raw mut shifted).cast(),
                flags,
                text.add(start),
                (end - start) as c_int,
                Some(x_token_shifted),
            );
            // the built-in answers OK when the callback stopped it with SQLITE_DONE: so must
            // the whole text, not go on past it
            if shifted.stopped != ffi::SQLITE_OK { shifted.stopped } else { rc }
        };
        let emit = |token: &[u8], start: usize, end: usize| {
            #[cfg(test)]
            tests::FAST_TOKENS.with(|n| n.set(n.get() + 1));
            if !seen.is_null() && (*seen).again(token) {
                return ffi::SQLITE_OK;
            }
            x_token(
                ctx,
                0,
                token.as_ptr().cast(),
                token.len() as c_int,
                start as c_int,
                end as c_int,
            )
        };
        let rc = tokenize_ascii(bytes, &mut instance.fold, emit, delegate);
        if !seen.is_null() {
            (*seen).finish();
        }
        if rc == ffi::SQLITE_DONE { ffi::SQLITE_OK } else { rc }
    }
}

/// The terms of the document being tokenized that were given to FTS5, as far as a direct-mapped
/// table of 1,024 slots (16 KB, within the CPU's first cache) remembers them: a term found there
/// is not given again. A term is forgotten when another takes its slot, and is then given again,
/// which FTS5 takes as it always did; terms of 15 bytes or more are always given.
///
/// Looking a token up costs ~40 instructions and saves FTS5 ~240 when it is a repeat, so it pays
/// for texts of which more than ~1 token in 6 repeats (prose repeats 2 in 5 within 2 KB). Texts
/// that do not (random words, ids) are left alone: when the documents of a round of at least
/// [`SEEN_SAMPLE`] tokens repeat less than that, the next [`SEEN_REST`] documents go straight
/// through, and the round after that looks again.
struct Seen {
    /// [`key`]s: a term, its length and the stamp of the document that gave it.
    slots: Box<[[u64; 2]; SEEN_SLOTS]>,
    /// The document's stamp (1 to 255): the slots of the documents before hold others.
    stamp: u8,
    /// Tokens looked up in this round's documents, and the repeats among them.
    looked: u32,
    repeats: u32,
    /// Documents still to go through without looking.
    resting: u32,
}

const SEEN_SLOTS: usize = 1 << 10;
/// Tokens looked up before a round's rate of repeats is judged.
const SEEN_SAMPLE: u32 = 4096;
/// Documents that go through without looking after a round with too few repeats.
const SEEN_REST: u32 = 64;

impl Seen {
    fn new() -> Seen {
        Seen { slots: Box::new([[0; 2]; SEEN_SLOTS]), stamp: 0, looked: 0, repeats: 0, resting: 0 }
    }

    /// A new document: whether to look its tokens up (the terms of those before are forgotten).
    fn start(&mut self) -> bool {
        if self.resting > 0 {
            self.resting -= 1;
            return false;
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // every 255 documents: no slot may hold a stamp that comes round again
            self.slots.fill([0; 2]);
            self.stamp = 1;
        }
        true
    }

    /// The document is done: at the end of a round, whether the next documents are worth
    /// looking at.
    fn finish(&mut self) {
        if self.looked < SEEN_SAMPLE {
            return;
        }
        if self.repeats < self.looked / 6 {
            self.resting = SEEN_REST;
        }
        self.looked = 0;
        self.repeats = 0;
    }

    /// Whether this document has given `term` already (as far as the table remembers); if not,
    /// it is remembered.
    #[inline]
    fn again(&mut self, term: &[u8]) -> bool {
        let Some(key) = key(term, self.stamp) else { return false };
        self.looked += 1;
        #[cfg(test)]
        tests::LOOKED.with(|n| n.set(n.get() + 1));
        let slot = ((key[0] ^ key[1]).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize;
        let held = &mut self.slots[slot % SEEN_SLOTS]; // (`slot` is 10 bits)
        if *held == key {
            self.repeats += 1;
            #[cfg(test)]
            tests::REPEATS.with(|n| n.set(n.get() + 1));
            return true;
        }
        *held = key;
        false
    }
}

/// A term of 1 to 14 bytes and a document's stamp as 16 bytes: the term's bytes first (zero
/// past its end), its length in the 15th, the stamp in the 16th. Built from two loads each side
/// that overlap where the term is shorter than the two (the overlap holds the same bytes
/// twice), with no copy.
#[inline]
fn key(term: &[u8], stamp: u8) -> Option<[u64; 2]> {
    let n = term.len();
    let at = |i: usize| term.as_ptr().wrapping_add(i);
    // SAFETY: each read is of bytes within `term`, whose length the arm has checked.
    let (first, rest) = unsafe {
        match n {
            1..=3 => {
                let (a, b, c) = (*at(0), *at(n / 2), *at(n - 1));
                (u64::from(a) | u64::from(b) << (8 * (n / 2)) | u64::from(c) << (8 * (n - 1)), 0)
            }
            4..=7 => {
                let a = at(0).cast::<u32>().read_unaligned();
                let b = at(n - 4).cast::<u32>().read_unaligned();
                (u64::from(u32::from_le(a)) | u64::from(u32::from_le(b)) << (8 * (n - 4)), 0)
            }
            8..=14 => {
                let a = u64::from_le(at(0).cast::<u64>().read_unaligned());
                let b = u64::from_le(at(n - 8).cast::<u64>().read_unaligned());
                // bytes 8.. of the term are the last n - 8 of `b`
                (a, (b >> 8) >> (8 * (15 - n)))
            }
            _ => return None,
        }
    };
    Some([first, rest | (n as u64) << 48 | u64::from(stamp) << 56])
}

/// The callback and offset for a stretch given to the built-in: its tokens' offsets are made
/// relative to the whole text again.
struct Shifted {
    ctx: *mut c_void,
    x_token: TokenFn,
    base: c_int,
    /// The document's terms given so far, when each is to be given once (else null).
    seen: *mut Seen,
    /// What the callback answered when it asked to stop.
    stopped: c_int,
}

unsafe extern "C" fn x_token_shifted(
    ctx: *mut c_void,
    tflags: c_int,
    token: *const c_char,
    n_token: c_int,
    start: c_int,
    end: c_int,
) -> c_int {
    // SAFETY: `ctx` is the `Shifted` that `x_tokenize` passed with this callback.
    unsafe {
        let s = &mut *ctx.cast::<Shifted>();
        if !s.seen.is_null() {
            let term = std::slice::from_raw_parts(token.cast::<u8>(), n_token.max(0) as usize);
            if (*s.seen).again(term) {
                return ffi::SQLITE_OK;
            }
        }
        let rc = (s.x_token)(s.ctx, tflags, token, n_token, start + s.base, end + s.base);
        if rc != ffi::SQLITE_OK {
            s.stopped = rc;
        }
        rc
    }
}

/// Splits `text` as unicode61 does: each run of ASCII letters and digits is a token, folded to
/// lower case (in `fold` when it has upper case, borrowed from `text` when not), given to
/// `emit` with its byte range; each stretch holding a non-ASCII byte, from the start of its
/// token to the next ASCII separator (which ends a token for unicode61 whatever precedes it), is
/// given to `delegate`. Stops at the first answer other than SQLITE_OK and returns it.
///
/// The text is classified 64 bytes at a time into bit masks (token byte, upper case, non-ASCII)
/// and tokens are found from them with bit scans: a few instructions a token rather than a few a
/// byte.
fn tokenize_ascii(
    text: &[u8],
    fold: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8], usize, usize) -> c_int,
    mut delegate: impl FnMut(usize, usize) -> c_int,
) -> c_int {
    let n = text.len();
    let mut base = 0; // where the classified block starts
    let mut m = Masks::of(&text[..n.min(64)]);
    let mut i = 0;
    'tokens: while i < n {
        // the next token byte: the token's start
        loop {
            let ahead = m.token >> (i - base);
            if ahead != 0 {
                i += ahead.trailing_zeros() as usize;
                break;
            }
            base += 64;
            if base >= n {
                break 'tokens;
            }
            m = Masks::of(&text[base..n.min(base + 64)]);
            i = base;
        }
        let start = i;
        let (mut upper, mut wide) = (false, false);
        // the next separator (blocks are padded with separators): the token's end
        loop {
            let at = i - base;
            let ahead = !m.token >> at;
            let span = if ahead != 0 {
                let len = ahead.trailing_zeros() as usize;
                i += len;
                ((1u64 << len) - 1) << at
            } else {
                i = base + 64;
                !0u64 << at
            };
            upper |= m.upper & span != 0;
            wide |= m.wide & span != 0;
            if ahead != 0 {
                break;
            }
            base += 64;
            if base >= n {
                i = n;
                break;
            }
            m = Masks::of(&text[base..n.min(base + 64)]);
        }
        let rc = if wide {
            delegate(start, i)
        } else if upper {
            fold.clear();
            fold.extend(text[start..i].iter().map(u8::to_ascii_lowercase));
            emit(fold, start, i)
        } else {
            emit(&text[start..i], start, i)
        };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    ffi::SQLITE_OK
}

/// A block of up to 64 bytes as bit masks, bit k for byte k; bytes past the block are
/// separators.
#[derive(Debug, PartialEq, Eq)]
struct Masks {
    /// A byte of a token for unicode61 with its default categories (`L* N* Co`): an ASCII letter
    /// or digit, or any byte of a multi-byte character (for unicode61 to judge).
    token: u64,
    /// An ASCII upper-case letter.
    upper: u64,
    /// A byte of a multi-byte character.
    wide: u64,
}

impl Masks {
    #[cfg(target_arch = "x86_64")]
    fn of(block: &[u8]) -> Masks {
        use std::arch::x86_64::*;
        let mut padded = [0u8; 64];
        let bytes: &[u8; 64] = match block.try_into() {
            Ok(whole) => whole,
            Err(_) => {
                padded[..block.len()].copy_from_slice(block);
                &padded
            }
        };
        let (mut token, mut upper, mut wide) = (0u64, 0u64, 0u64);
        for k in 0..4 {
            // SAFETY: SSE2 is part of x86_64; the load reads 16 of the 64 bytes, unaligned.
            unsafe {
                let v = _mm_loadu_si128(bytes.as_ptr().add(16 * k).cast());
                // `lo..lo+len` as a signed compare: shift the range down to start at -128
                let within = |v: __m128i, lo: u8, len: u8| {
                    let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
                    _mm_cmplt_epi8(shifted, _mm_set1_epi8((0x80u8 + len) as i8))
                };
                let digit = within(v, b'0', 10);
                let letter = within(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', 26);
                let up = within(v, b'A', 26);
                let high = _mm_movemask_epi8(v) as u16 as u64;
                let ascii = _mm_movemask_epi8(_mm_or_si128(digit, letter)) as u16 as u64;
                token |= (ascii | high) << (16 * k);
                upper |= (_mm_movemask_epi8(up) as u16 as u64) << (16 * k);
                wide |= high << (16 * k);
            }
        }
        Masks { token, upper, wide }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of(block: &[u8]) -> Masks {
        Masks::of_bytes(block)
    }

    /// One byte at a time: for other architectures, and the reference the vector form is
    /// tested against.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn of_bytes(block: &[u8]) -> Masks {
        let (mut token, mut upper, mut wide) = (0u64, 0u64, 0u64);
        for (k, &b) in block.iter().enumerate() {
            let bit = 1u64 << k;
            match b {
                b'0'..=b'9' | b'a'..=b'z' => token |= bit,
                b'A'..=b'Z' => {
                    token |= bit;
                    upper |= bit;
                }
                0x80..=0xff => {
                    token |= bit;
                    wide |= bit;
                }
                _ => {}
            }
        }
        Masks { token, upper, wide }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Tokens this thread's fast path has handed to FTS5.
        pub(super) static FAST_TOKENS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Tokens this thread left out as terms their document had given.
        pub(super) static REPEATS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Tokens this thread looked up among the terms their document had given.
        pub(super) static LOOKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The terms an FTS5 table holds, each with the number of rows that have it.
    fn terms(conn: &Connection) -> Vec<(String, i64)> {
        conn.prepare("SELECT term, doc FROM v ORDER BY term")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// The rows of table `t` that `q` matches.
    fn rows(conn: &Connection, q: &str) -> Vec<i64> {
        conn.prepare("SELECT rowid FROM t WHERE t MATCH ?1 ORDER BY rowid")
            .unwrap()
            .query_map([q], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn index(conn: &Connection, tokenize: &str, texts: &[String]) {
        conn.execute_batch(&format!(
            "CREATE VIRTUAL TABLE t USING fts5(body, content = '', contentless_delete = 1,
                 detail = none, tokenize = '{tokenize}');
             CREATE VIRTUAL TABLE v USING fts5vocab(t, row);"
        ))
        .unwrap();
        let mut insert = conn.prepare("INSERT INTO t (rowid, body) VALUES (?1, ?2)").unwrap();
        for (i, text) in texts.iter().enumerate() {
            insert.execute(rusqlite::params![i as i64 + 1, text]).unwrap();
        }
    }

    /// Texts of every kind the fast path must split as unicode61 does: ASCII of every byte,
    /// letters with accents (composed and combining), non-ASCII letters, separators and digits at
    /// the edges of ASCII words, emoji, and random mixes of them.
    fn corpus() -> Vec<String> {
        let mut texts: Vec<String> = [
            "Hello, World! The QUICK brown fox_jumps over 13 lazy-dogs.",
            "naïve café CAFÉ Ångström résumé Müller straße ÆSIR",
            "combining: cafe\u{301} e\u{301}x a\u{308}b",
            "日本語のテキスト и русский ТЕКСТ, ελληνικά ΚΕΙΜΕΝΟ",
            "edges: abc—def «quoted» “curly” x²y ½ ٣٤ ①② 🙂emoji🙂 tab\there\u{a0}nbsp",
            "ids: 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 {\"role\":\"user\"}",
            "",
            "   ",
            "Z",
            "é",
            "AbC",
            "\u{0}nul\u{1}ctl\u{7f}del",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        texts.push((0u8..128).map(char::from).collect());
        texts.push((0u8..128).rev().map(char::from).collect::<String>().repeat(3));
        // random mixes: of ASCII letters, digits and separators only (every other text), and of
        // those with non-ASCII letters, marks, digits and separators
        let pieces = [
            "a", "Z", "q", "0", "9", "_", " ", ".", "-", "\n", "é", "É", "ß", "—", "“", "\u{301}",
            "ж", "Ж", "中", "🙂", "\u{a0}", "İ", "ﬁ", "Ⅸ", "٣",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for k in 0..800 {
            let from = if k % 2 == 0 { &pieces[..10] } else { &pieces[..] };
            let len = next() % 60;
            texts.push((0..len).map(|_| from[(next() % from.len() as u64) as usize]).collect());
        }
        // long texts, whose tokens cross the 64-byte blocks the fast path classifies
        let long: Vec<String> = texts.chunks(25).map(|c| c.concat()).collect();
        texts.extend(long);
        texts
    }

    /// Indexes `texts` in a table tokenized by `tokenize` on a connection with the built-in
    /// unicode61 and on one with ours: the terms of each, and the tokens our fast path gave.
    #[allow(clippy::type_complexity)]
    fn both(tokenize: &str, texts: &[String]) -> (Vec<(String, i64)>, Vec<(String, i64)>, usize) {
        both_kept(tokenize, texts, Detail::Positions)
    }

    #[allow(clippy::type_complexity)]
    fn both_kept(
        tokenize: &str,
        texts: &[String],
        detail: Detail,
    ) -> (Vec<(String, i64)>, Vec<(String, i64)>, usize) {
        let builtin = Connection::open_in_memory().unwrap();
        index(&builtin, tokenize, texts);
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, detail).unwrap();
        let before = FAST_TOKENS.with(|n| n.get());
        index(&fast, tokenize, texts);
        let ran = FAST_TOKENS.with(|n| n.get()) - before;
        (terms(&builtin), terms(&fast), ran)
    }

    #[test]
    fn the_same_terms_as_unicode61() {
        let texts = corpus();
        for tokenize in
            ["unicode61 remove_diacritics 2", "unicode61", "unicode61 remove_diacritics 0"]
        {
            let (expected, got, ran) = both(tokenize, &texts);
            assert!(ran > 2000, "{tokenize}: the fast path gave {ran} tokens");
            assert!(expected.len() > 100, "{tokenize}: {} terms", expected.len());
            assert_eq!(got, expected, "{tokenize}");
        }
    }

    /// Texts that repeat their words, as prompts do: English, a chat's turns, long words, words
    /// that differ only in length or case, and the corpus's mixes.
    fn repetitive() -> Vec<String> {
        let english = "The agent should retrieve the relevant context from the knowledge base \
            before it answers the customer, and the answer should cite the context it used. ";
        let mut texts = vec![
            english.repeat(20),
            format!("{}\n{}", english.to_uppercase(), english),
            "a aa aaa aaaa a aa aaa aaaa Aa AA aA".to_string(),
            "abcdefghijklmno abcdefghijklmnop abcdefghijklmnopq abcdefghijklmno abcdefghijklmnop \
             abcdefghijklmnopq"
                .to_string(),
            "naïve café naïve CAFÉ 日本 日本 naive cafe".repeat(5),
            "x".repeat(10_000),
            (0..3000).map(|i| format!("w{} ", i % 700)).collect(),
        ];
        texts.extend(corpus().chunks(5).map(|c| c.concat().repeat(3)));
        texts
    }

    #[test]
    fn a_terms_only_table_gets_each_term_of_a_document_once() {
        let texts = repetitive();
        let before = REPEATS.with(|n| n.get());
        let (expected, got, ran) =
            both_kept("unicode61 remove_diacritics 2", &texts, Detail::TermsOnly);
        let repeats = REPEATS.with(|n| n.get()) - before;
        assert!(ran > 10_000, "the fast path gave {ran} tokens");
        assert!(repeats > ran / 2, "{repeats} of {ran} tokens left out as repeats");
        assert!(expected.len() > 700, "{} terms", expected.len());
        assert_eq!(got, expected, "the same terms in the same rows");

        // and what a search finds is the same
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, Detail::TermsOnly).unwrap();
        index(&fast, "unicode61 remove_diacritics 2", &texts);
        let builtin = Connection::open_in_memory().unwrap();
        index(&builtin, "unicode61 remove_diacritics 2", &texts);
        for q in ["the", "customer AND cite", "aaaa", "abcdefghijklmnopq", "naive", "w699", "w*"] {
            let found = rows(&builtin, q);
            assert!(!found.is_empty(), "{q}");
            assert_eq!(rows(&fast, q), found, "{q}");
        }
    }

    /// Each document starts with nothing remembered, however many came before it (the stamps
    /// come round every 255 documents).
    #[test]
    fn a_document_long_before_is_not_taken_for_this_one() {
        let texts: Vec<String> = (1..=600)
            .map(|i| if i == 1 || i % 255 == 1 || i % 256 == 0 { "alpha" } else { "filler" })
            .map(String::from)
            .collect();
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, Detail::TermsOnly).unwrap();
        index(&fast, "unicode61 remove_diacritics 2", &texts);
        assert_eq!(rows(&fast, "alpha"), [1, 256, 511, 512]);
    }

    /// Texts whose words do not repeat go through mostly without being looked up, and looking
    /// starts again once texts repeat; the terms are unicode61's throughout.
    #[test]
    fn texts_that_do_not_repeat_are_mostly_not_looked_at() {
        let unique: Vec<String> =
            (0..400).map(|d| (0..100).map(|w| format!("u{d}x{w} ")).collect::<String>()).collect();
        let english = "the agent should check the context the customer gave the agent ".repeat(8);
        let mut texts = unique.clone();
        texts.extend(std::iter::repeat_n(english, 200));
        let (looked, repeats) = (LOOKED.with(|n| n.get()), REPEATS.with(|n| n.get()));
        let (expected, got, _) =
            both_kept("unicode61 remove_diacritics 2", &texts, Detail::TermsOnly);
        assert_eq!(got, expected);
        let looked = LOOKED.with(|n| n.get()) - looked;
        let repeats = REPEATS.with(|n| n.get()) - repeats;
        // 40,000 unique tokens, of which two rounds of ~4,100 in each 105 documents are looked at;
        // then the repeating texts: looked at once the rest is over, and stay so
        let english_tokens = 200 * 8 * 11;
        assert!(looked < 20_000 + english_tokens, "{looked} tokens looked at");
        assert!(repeats > english_tokens * 3 / 4, "{repeats} of {english_tokens} left out");
    }

    /// A key holds its term's bytes in place, zeros after them, the length and the stamp: two
    /// terms have the same key only if they are the same.
    #[test]
    fn a_key_is_its_term_and_stamp() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (k % 16) as usize;
            let term: Vec<u8> = (0..n).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            let stamp = (seed >> 56) as u8;
            match key(&term, stamp) {
                None => assert!(n == 0 || n > 14, "{n}"),
                Some([first, rest]) => {
                    let bytes = (u128::from(first) | u128::from(rest) << 64).to_le_bytes();
                    assert_eq!(&bytes[..n], &term[..], "{term:?}");
                    assert!(bytes[n..14].iter().all(|&b| b == 0), "{term:?}");
                    assert_eq!((bytes[14], bytes[15]), (n as u8, stamp), "{term:?}");
                }
            }
        }
    }

    #[test]
    fn other_arguments_are_left_to_unicode61() {
        let texts = corpus();
        let tokenize = "unicode61 tokenchars ''_-'' separators ''x''";
        let (expected, got, ran) = both(tokenize, &texts);
        assert_eq!(ran, 0, "no token came from the fast path");
        assert!(expected.iter().any(|(t, _)| t.contains('_')), "tokenchars took effect");
        assert_eq!(got, expected);
    }

    #[test]
    fn bad_arguments_are_refused_as_unicode61_refuses_them() {
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, Detail::Positions).unwrap();
        let err = fast
            .execute_batch("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'unicode61 remove_diacritics 7')")
            .unwrap_err();
        assert!(err.to_string().contains("tokenizer"), "{err}");
    }

    #[test]
    fn searches_find_what_the_fast_path_indexed() {
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, Detail::Positions).unwrap();
        index(&fast, "unicode61 remove_diacritics 2", &corpus()[..14]);
        let count = |q: &str| -> i64 {
            fast.query_row("SELECT count(*) FROM t WHERE t MATCH ?1", [q], |r| r.get(0)).unwrap()
        };
        assert_eq!(count("quick"), 1);
        assert_eq!(count("QUICK AND lazy"), 1);
        assert_eq!(count("jumps"), 1, "underscore separates, as in unicode61");
        assert_eq!(count("cafe"), 2, "diacritics removed in the stretch unicode61 took");
        assert_eq!(count("4bf92f3577b34da6a3ce929d0e0e4736"), 1);
        assert_eq!(count("nosuchword"), 0);
    }

    #[test]
    fn every_byte_is_classified_as_one_at_a_time() {
        let all: Vec<u8> = (0..=255u8).collect();
        for block in all.chunks(64).chain(all.chunks(37)).chain([&all[..0], &all[200..201]]) {
            assert_eq!(Masks::of(block), Masks::of_bytes(block), "{block:?}");
        }
        assert_eq!(Masks::of_bytes(b"aZ9_\xc3\xa9").token, 0b11_0111);
    }

    #[test]
    fn tokens_across_blocks_are_whole() {
        // tokens ending, starting and running across every 64-byte boundary
        for pad in 0..70 {
            for word in [
                "w",
                "Word",
                "wörd",
                "longwordlongwordlongwordlongwordlongwordlongwordlongwordlongwordlongword",
            ] {
                let text = format!("{}{word} {word}", " ".repeat(pad));
                let (got, mut fold) = (std::cell::RefCell::new(Vec::new()), Vec::new());
                tokenize_ascii(
                    text.as_bytes(),
                    &mut fold,
                    |t, s, e| {
                        got.borrow_mut().push((String::from_utf8(t.to_vec()).unwrap(), s, e));
                        ffi::SQLITE_OK
                    },
                    |s, e| {
                        got.borrow_mut().push((format!("<{}>", &text[s..e]), s, e));
                        ffi::SQLITE_OK
                    },
                );
                let folded =
                    if word.is_ascii() { word.to_lowercase() } else { format!("<{word}>") };
                let second = pad + word.len() + 1;
                assert_eq!(
                    got.into_inner(),
                    [
                        (folded.clone(), pad, pad + word.len()),
                        (folded, second, second + word.len())
                    ],
                    "{pad} {word}"
                );
            }
        }
    }

    #[test]
    fn stretches_with_non_ascii_go_whole_to_unicode61() {
        let text = "Hi, naïve WORLD wide—x";
        let (mut got, mut delegated, mut fold) = (Vec::new(), Vec::new(), Vec::new());
        tokenize_ascii(
            text.as_bytes(),
            &mut fold,
            |t, s, e| {
                got.push((String::from_utf8(t.to_vec()).unwrap(), s, e));
                ffi::SQLITE_OK
            },
            |s, e| {
                delegated.push(&text[s..e]);
                ffi::SQLITE_OK
            },
        );
        assert_eq!(got, [("hi".to_string(), 0, 2), ("world".to_string(), 11, 16)]);
        assert_eq!(delegated, ["naïve", "wide—x"]);
    }

    /// A callback that answers SQLITE_DONE is called no more, whether the token came from the
    /// fast path or from a stretch given to the built-in.
    #[test]
    fn a_callback_that_stops_is_not_called_again() {
        unsafe extern "C" fn take(
            ctx: *mut c_void,
            _: c_int,
            token: *const c_char,
            n: c_int,
            _: c_int,
            _: c_int,
        ) -> c_int {
            // SAFETY: `ctx` is the test's (tokens, stop after) pair; FTS5 passes n bytes.
            unsafe {
                let (got, stop_after) = &mut *ctx.cast::<(Vec<String>, usize)>();
                let bytes = std::slice::from_raw_parts(token.cast::<u8>(), n as usize);
                got.push(String::from_utf8_lossy(bytes).into_owned());
                if got.len() == *stop_after { ffi::SQLITE_DONE } else { ffi::SQLITE_OK }
            }
        }
        let conn = Connection::open_in_memory().unwrap();
        register(&conn, Detail::Positions).unwrap();
        let text = "First naïve Third fourth";
        for (stop_after, expected) in [
            (1, vec!["first"]),
            (2, vec!["first", "naive"]),
            (9, vec!["first", "naive", "third", "fourth"]),
        ] {
            // SAFETY: the tokenizer FTS5 finds under the name is ours, created and used as FTS5
            // would, with arguments that live through the calls.
            unsafe {
                let api = fts5_api(&conn).unwrap();
                let mut tok = ffi::fts5_tokenizer { xCreate: None, xDelete: None, xTokenize: None };
                let mut user_data = ptr::null_mut();
                let found =
                    (*api).xFindTokenizer.unwrap()(api, NAME.as_ptr(), &mut user_data, &mut tok);
                assert_eq!(found, ffi::SQLITE_OK);
                let args = [c"remove_diacritics".as_ptr(), c"2".as_ptr()];
                let mut instance = ptr::null_mut();
                let rc =
                    tok.xCreate.unwrap()(user_data, args.as_ptr().cast_mut(), 2, &mut instance);
                assert_eq!(rc, ffi::SQLITE_OK);
                let mut ctx = (Vec::<String>::new(), stop_after);
                let rc = tok.xTokenize.unwrap()(
                    instance,
                    (&raw mut ctx).cast(),
                    ffi::FTS5_TOKENIZE_DOCUMENT,
                    text.as_ptr().cast(),
                    text.len() as c_int,
                    Some(take),
                );
                tok.xDelete.unwrap()(instance);
                assert_eq!(rc, ffi::SQLITE_OK, "SQLITE_DONE is answered as OK, as unicode61 does");
                assert_eq!(ctx.0, expected, "stopping after {stop_after}");
            }
        }
    }

    /// highlight() places its marks by the tokens' byte offsets: those from unicode61's
    /// stretches are shifted back to the whole text's.
    #[test]
    fn offsets_are_those_of_the_whole_text() {
        let texts =
            ["Hi, naïve WORLD wide—x and CAFÉ—Crème", "日本 world 日本 World", "plain WORLD"];
        let marked = |conn: &Connection| -> Vec<String> {
            conn.execute_batch(
                "CREATE VIRTUAL TABLE h USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')",
            )
            .unwrap();
            for t in texts {
                conn.execute("INSERT INTO h (body) VALUES (?1)", [t]).unwrap();
            }
            conn.prepare("SELECT highlight(h, 0, '[', ']') FROM h WHERE h MATCH 'naive OR world OR wide OR x OR creme OR cafe' ORDER BY rowid")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let builtin = Connection::open_in_memory().unwrap();
        let fast = Connection::open_in_memory().unwrap();
        register(&fast, Detail::Positions).unwrap();
        let expected = marked(&builtin);
        assert_eq!(expected[0], "Hi, [naïve] [WORLD] [wide]—[x] and [CAFÉ]—[Crème]");
        assert_eq!(marked(&fast), expected);
    }
}

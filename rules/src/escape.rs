//! JSON string escapes, undone: for the scanner ([`crate::json`]) and for
//! the values it leaves escaped until a rule reads them ([`crate::doc`]).

/// Unescapes the inside of a JSON string (without quotes) into `out`.
pub(crate) fn unescape_into(raw: &[u8], out: &mut String) -> Result<(), &'static str> {
    let mut i = 0;
    while i < raw.len() {
        let next = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |j| i + j);
        // The input is valid UTF-8 and we cut only at ASCII bytes.
        out.push_str(std::str::from_utf8(&raw[i..next]).map_err(|_| "invalid UTF-8 in string")?);
        if next == raw.len() {
            break;
        }
        let esc = *raw.get(next + 1).ok_or("unterminated escape")?;
        i = next + 2;
        let c = match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(raw.get(i..i + 4).ok_or("short \\u escape")?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err("unpaired surrogate in \\u escape");
                    }
                    let lo = hex4(raw.get(i + 2..i + 6).ok_or("short \\u escape")?)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err("invalid low surrogate in \\u escape");
                    }
                    i += 6;
                    let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    char::from_u32(cp).ok_or("invalid \\u escape")?
                } else {
                    char::from_u32(hi).ok_or("unpaired surrogate in \\u escape")?
                }
            }
            _ => return Err("invalid escape"),
        };
        out.push(c);
    }
    Ok(())
}

pub(crate) fn unescape_to_string(raw: &[u8]) -> Result<String, &'static str> {
    let mut s = String::with_capacity(raw.len());
    unescape_into(raw, &mut s)?;
    Ok(s)
}

fn hex4(h: &[u8]) -> Result<u32, &'static str> {
    let mut v = 0u32;
    for &c in h {
        let d = (c as char).to_digit(16).ok_or("invalid hex digit in \\u escape")?;
        v = v * 16 + d;
    }
    Ok(v)
}

//! A tracefs `events/<category>/<event>/format` file, parsed.

use super::TracefsError;

/// One field of a trace event record, as described by its `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// C type as tracefs prints it: `unsigned long`, `gfp_t`, `struct page *`, `char[16]` (for
    /// `char comm[16]`), `__data_loc char[]`.
    pub type_name: String,
    /// Byte offset in the record (including the common header).
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

impl Field {
    #[cfg(test)]
    /// `common_type`, `common_pid`, ...: the header every event record starts with.
    pub fn is_common(&self) -> bool {
        self.name.starts_with("common_")
    }
}

/// A parsed `events/<category>/<event>/format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    pub name: String,
    pub id: Option<u32>,
    /// Every field in file order, common header fields included.
    pub fields: Vec<Field>,
}

impl EventFormat {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
/// Parses the text of a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<EventFormat, TracefsError> {
    parse_format_from(text, "format text")
}

pub(super) fn parse_format_from(text: &str, origin: &str) -> Result<EventFormat, TracefsError> {
    let err = |line: usize, reason: String| TracefsError::Parse {
        origin: origin.to_string(),
        line,
        reason,
    };
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            let value = rest.trim();
            id = Some(
                value
                    .parse::<u32>()
                    .map_err(|_| err(lineno, format!("event ID `{value}` is not a number")))?,
            );
        } else if line.starts_with("field:") {
            fields.push(parse_field_line(line).map_err(|reason| err(lineno, reason))?);
        } else if line.starts_with("print fmt:") {
            // Nothing after the print format is part of the record description.
            break;
        }
        // `format:`, blank lines and unknown lines are ignored.
    }
    let name = name.ok_or_else(|| err(1, "no `name:` line".to_string()))?;
    if fields.is_empty() {
        return Err(err(1, format!("event {name} has no `field:` lines")));
    }
    Ok(EventFormat { name, id, fields })
}

/// Parses `field:unsigned long pfn;\toffset:8;\tsize:8;\tsigned:0;`.
fn parse_field_line(line: &str) -> Result<Field, String> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not `key:value`"))?;
        let value = value.trim();
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("`{key}` value `{value}` is not a number"))
        };
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {} // Future keys are ignored.
        }
    }
    let decl = decl.ok_or("no `field:` declaration")?;
    let (type_name, name) = split_declaration(decl)?;
    Ok(Field {
        name,
        type_name,
        offset: offset.ok_or_else(|| format!("field `{decl}` has no offset"))?,
        size: size.ok_or_else(|| format!("field `{decl}` has no size"))?,
        signed,
    })
}

/// Splits a C declaration as tracefs prints it (`"%s %s", type, name`) into (type, name).
/// `char comm[16]` becomes (`char[16]`, `comm`); `__data_loc char[] name` stays as is.
pub(super) fn split_declaration(decl: &str) -> Result<(String, String), String> {
    let decl = decl.trim();
    let (ty, name) = decl
        .rsplit_once(char::is_whitespace)
        .ok_or_else(|| format!("field declaration `{decl}` has no type"))?;
    let ty = ty.trim();
    let (name, array) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    // A pointer star glued to the name (`struct page *page`) belongs to the type.
    let stars = name.len() - name.trim_start_matches('*').len();
    let (name, ty) = if stars > 0 {
        (&name[stars..], format!("{ty} {}", &"*".repeat(stars)))
    } else {
        (name, ty.to_string())
    };
    if name.is_empty() || ty.is_empty() {
        return Err(format!("field declaration `{decl}` has no name"));
    }
    Ok((format!("{ty}{array}"), name.to_string()))
}

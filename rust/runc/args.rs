//! Command flags as urfave/cli (runc's parser) takes them: `--name value`, `--name=value`,
//! one dash or two, short aliases, repeatable flags, `--` ending the flags.

use std::collections::BTreeMap;

use super::Fail;

/// One flag a command knows: its names (the first is canonical) and whether it takes a value.
pub struct Flag {
    pub names: &'static [&'static str],
    pub value: bool,
}

pub const fn flag(names: &'static [&'static str], value: bool) -> Flag {
    Flag { names, value }
}

/// A command's parsed arguments.
#[derive(Default, Debug)]
pub struct Parsed {
    pub values: BTreeMap<&'static str, Vec<String>>,
    pub bools: Vec<&'static str>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, name: &str) -> bool {
        self.bools.contains(&name)
    }

    /// The container ID (first positional), required.
    pub fn id(&self, command: &str) -> Result<&str, Fail> {
        self.positional.first().map(String::as_str).ok_or_else(|| {
            Fail::msg(format!(
                "pyrun-runtime: {command:?} requires a minimum of 1 argument(s)"
            ))
        })
    }

    pub fn max_args(&self, command: &str, n: usize) -> Result<(), Fail> {
        if self.positional.len() > n {
            return Err(Fail::msg(format!(
                "pyrun-runtime: {command:?} requires a maximum of {n} argument(s)"
            )));
        }
        Ok(())
    }
}

/// "--name=value" → ("name", Some("value")); "-a" → ("a", None).
pub fn split_flag(arg: &str) -> (String, Option<String>) {
    let body = arg.trim_start_matches('-');
    match body.split_once('=') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (body.to_string(), None),
    }
}

/// Parse `args` against `flags`. `stop_at_positional`: everything after the first positional
/// argument is positional too (`exec ID CMD -x`, `ps ID -ef`).
pub fn parse(
    command: &str,
    args: &[String],
    flags: &[Flag],
    stop_at_positional: bool,
) -> Result<Parsed, Fail> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            p.positional.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            p.positional.push(a.clone());
            i += 1;
            if stop_at_positional {
                p.positional.extend(args[i..].iter().cloned());
                break;
            }
            continue;
        }
        let (name, inline) = split_flag(a);
        let Some(f) = flags.iter().find(|f| f.names.contains(&name.as_str())) else {
            return Err(Fail::msg(format!(
                "pyrun-runtime {command}: flag provided but not defined: -{name}"
            )));
        };
        let canonical = f.names[0];
        if f.value {
            let v = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| {
                        Fail::msg(format!(
                            "pyrun-runtime {command}: flag needs an argument: -{name}"
                        ))
                    })?
                }
            };
            p.values.entry(canonical).or_default().push(v);
        } else {
            match inline.as_deref() {
                None | Some("true") | Some("1") => p.bools.push(canonical),
                Some("false") | Some("0") => {}
                Some(other) => {
                    return Err(Fail::msg(format!(
                        "pyrun-runtime {command}: invalid boolean value {other:?} for -{name}"
                    )))
                }
            }
        }
        i += 1;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runc_style_flags() {
        let flags = [
            flag(&["bundle", "b"], true),
            flag(&["detach", "d"], false),
            flag(&["env", "e"], true),
        ];
        let p = parse(
            "x",
            &s(&[
                "-b",
                "/a",
                "--detach",
                "--env=A=1",
                "-e",
                "B=2",
                "id",
                "--x",
            ]),
            &flags,
            true,
        )
        .unwrap();
        assert_eq!(p.get("bundle"), Some("/a"));
        assert!(p.has("detach"));
        assert_eq!(p.all("env"), &s(&["A=1", "B=2"])[..]);
        assert_eq!(p.positional, s(&["id", "--x"]));
        assert!(parse("x", &s(&["--nope"]), &flags, false).is_err());
        assert!(parse("x", &s(&["--bundle"]), &flags, false).is_err());
        let p = parse("x", &s(&["id", "-d"]), &flags, false).unwrap();
        assert!(p.has("detach"));
        assert_eq!(p.id("x").unwrap(), "id");
    }
}

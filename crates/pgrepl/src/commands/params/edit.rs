//! `pgrepl config edit`: the cluster's settings in a file as `config show` prints them, opened
//! in the user's editor, read back line by line, and written as `config set` writes.

use super::*;

/// The file `config edit` opens: a header saying what it is, then one parameter a line.
pub fn render(cluster: &str, parameters: &BTreeMap<String, String>, wide: &ClusterWide) -> String {
    let mut text = format!(
        "# The PostgreSQL parameters of cluster {cluster}, the same for every member (`pgrepl config edit`).\n\
         # One `name = 'value'` a line (a ' in a value doubled); lines starting with # are comments.\n\
         # Saved, the parameters become these for every member: checked by PostgreSQL first, and\n\
         # refused if the cluster's spec changed meanwhile. Saved unchanged, or with no\n\
         # parameter left, it changes nothing (`pgrepl config reset NAME` removes one).\n\
         # Parameters pgrepl sets itself (port, listen_addresses, primary_conninfo, ...) are refused.\n\
         # pgrepl's own settings below are checked as pgrepl.toml's; one removed goes back to its default.\n\n"
    );
    push_lines(&mut text, parameters);
    text.push_str("\n# pgrepl's cluster-wide settings, the same for every member and router\n");
    push_lines(&mut text, wide.texts());
    text
}

/// The parameters of a file `config edit` opened, once saved: each line a comment (`#`), blank,
/// or `name = value`, the value quoted as `config show` prints it (`'...'`, a `'` doubled) or a
/// bare word, and a comment may follow it. Any other line is refused, by its number.
pub fn parse_file(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            bail!("line {n}: {trimmed:?} is not `name = 'value'` or a comment; nothing was changed");
        };
        let name = name.trim();
        check_name(name).map_err(|e| anyhow::anyhow!("line {n}: {e}; nothing was changed"))?;
        let value = parse_value(value)
            .map_err(|why| anyhow::anyhow!("line {n}: the value of {name} {why}; nothing was changed"))?;
        if let Some(first) = lines_of.insert(name.to_string(), n) {
            bail!("line {n}: {name} is already set on line {first}; nothing was changed");
        }
        parameters.insert(name.to_string(), value);
    }
    Ok(parameters)
}

/// A value after `=`: `'quoted'` (a `'` inside doubled) or a bare word; then optionally a comment.
fn parse_value(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    let Some(quoted) = raw.strip_prefix('\'') else {
        let value = raw.split('#').next().unwrap_or_default().trim();
        if value.is_empty() {
            return Err("is missing (write '' for an empty one)");
        }
        if value.contains(|c: char| c.is_whitespace() || c == '\'') {
            return Err("has spaces or quotes: quote it ('...', a ' inside doubled)");
        }
        return Ok(value.to_string());
    };
    let mut value = String::new();
    let mut chars = quoted.chars().peekable();
    loop {
        match chars.next() {
            None => return Err("has no closing '"),
            Some('\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                value.push('\'');
            }
            Some('\'') => break,
            Some(c) => value.push(c),
        }
    }
    let rest: String = chars.collect();
    let rest = rest.trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err("has text after its closing '");
    }
    Ok(value)
}

/// The editor `config edit` runs: `$EDITOR`, else `$VISUAL`, else `vi`.
fn editor(var: impl Fn(&str) -> Option<String>) -> String {
    ["EDITOR", "VISUAL"]
        .iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_string())
}

/// A file of mode 0600 in the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(text: &str) -> anyhow::Result<Scratch> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let suffix: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("pgrepl-config-{}-{suffix:016x}.conf", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let scratch = Scratch(path);
        file.write_all(text.as_bytes()).with_context(|| format!("write {}", scratch.0.display()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `config edit`: `$EDITOR` on the parameters, then, on save, the change written as `config set`
/// writes one, against the spec's revision read before the editor opened.
pub async fn edit(dir: &Path) -> anyhow::Result<()> {
    let actor = Actor::now("pgrepl config edit");
    let cluster = Cluster::open(dir).await?;
    let read = read(&cluster).await?;
    let scratch = Scratch::create(&render(&cluster.config.cluster, &read.parameters, &read.wide))?;
    let editor = editor(|name| std::env::var(name).ok());
    // Through the shell, as git runs it: an editor may be given with its arguments.
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(&editor)
        .arg(&scratch.0)
        .status()
        .await
        .context("run sh for the editor")?;
    match status.code() {
        Some(0) => {}
        Some(126 | 127) => bail!(
            "the editor {editor:?} could not be run; set EDITOR to one that can (say EDITOR=nano); nothing was changed"
        ),
        _ => bail!("the editor {editor:?} ended with {status}; nothing was changed"),
    }
    let text = std::fs::read_to_string(&scratch.0).with_context(|| format!("read {}", scratch.0.display()))?;
    drop(scratch);
    let saved = parse_file(&text)?;
    let (ours, parameters): (BTreeMap<_, _>, BTreeMap<_, _>) = saved.into_iter().partition(|(k, _)| is_key(k));
    if parameters.is_empty() && !read.parameters.is_empty() {
        println!(
            "nothing changed: the file held no parameter (`pgrepl config reset NAME ...` removes the cluster's parameters)"
        );
        return Ok(());
    }
    let set: Vec<(String, String)> = ours.clone().into_iter().collect();
    let removed: Vec<String> =
        crate::config::cluster_wide::KEYS.iter().filter(|k| !ours.contains_key(**k)).map(|k| k.to_string()).collect();
    let wide = read.wide.changed(&set, &removed).map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let next = Next { parameters, wide };
    let (old, new) = (all_settings(&read.parameters, &read.wide), all_settings(&next.parameters, &next.wide));
    let changes = parameter_changes(&old, &new);
    if changes.is_empty() || write(&cluster, read, next, &actor).await? == Written::Unchanged {
        println!("nothing changed");
        return Ok(());
    }
    for (name, change) in &changes {
        println!("{name}: {} -> {} for every member", history::shown(&change.old), history::shown(&change.new));
    }
    say_applied(&old, &new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{map, wide};
    use super::*;

    #[test]
    fn the_edited_file_reads_back_what_show_prints_and_refuses_other_lines_by_number() {
        let parameters = map(&[("work_mem", "8MB"), ("search_path", "\"$user\", it's"), ("jit", "")]);
        let text = render("shop", &parameters, &wide());
        assert!(text.starts_with("# The PostgreSQL parameters of cluster shop"), "{text}");
        assert!(text.contains("search_path = '\"$user\", it''s'\n"), "{text}");
        assert!(text.contains("\nttl = '4s'\n"), "{text}");
        assert_eq!(parse_file(&text).unwrap(), all_settings(&parameters, &wide()));
        // Bare words and trailing comments, as postgresql.conf takes them.
        let edited = "# mine\n\n  work_mem = 16MB   # more\nmax_wal_size='2GB' # comment\n";
        assert_eq!(parse_file(edited).unwrap(), map(&[("work_mem", "16MB"), ("max_wal_size", "2GB")]));
        assert_eq!(parse_file("# only comments\n\n").unwrap(), map(&[]));
        for (text, words) in [
            ("work_mem = 8MB\nwork_mem 8MB\n", "line 2: \"work_mem 8MB\" is not `name = 'value'` or a comment"),
            ("# c\nport = 6000\n", "line 2: port is set by pgrepl on every member"),
            ("work mem = 1\n", "line 1: \"work mem\" is not a PostgreSQL setting name"),
            ("\n\nwork_mem =\n", "line 3: the value of work_mem is missing"),
            ("work_mem = 8 MB\n", "line 1: the value of work_mem has spaces or quotes"),
            ("work_mem = '8MB\n", "line 1: the value of work_mem has no closing '"),
            ("work_mem = '8MB' x\n", "line 1: the value of work_mem has text after its closing '"),
            ("work_mem = 1MB\njit = off\nwork_mem = 2MB\n", "line 3: work_mem is already set on line 1"),
        ] {
            let e = parse_file(text).unwrap_err().to_string();
            assert!(e.starts_with(words) && e.ends_with("nothing was changed"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_editor_is_editor_then_visual_then_vi() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(editor(env(&[("EDITOR", "nano"), ("VISUAL", "code --wait")])), "nano");
        assert_eq!(editor(env(&[("EDITOR", " "), ("VISUAL", "code --wait")])), "code --wait");
        assert_eq!(editor(env(&[])), "vi");
    }
}

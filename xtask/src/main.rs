//! `xtask`: project chores that belong to no program (docs/install.md), run with `cargo run -p xtask`.
//!
//! - `gen` writes the man pages and shell completions of the eight programs from their clap
//!   definitions (each bin crate's `cli()`): `packaging/man/<program>.1`, one page per
//!   `reverberator` subcommand (`reverberator-run.1`, …), `packaging/man/reverberator.toml.5`
//!   (the configuration file; its text is in [`pages`], with each program's SIGNALS, FILES
//!   and EXAMPLES), and
//!   `packaging/completions/{bash/<program>.bash, zsh/_<program>, fish/<program>.fish}`.
//! - `check` generates the same files into a temporary directory and compares them with the
//!   committed ones; it exits 1 naming every file that differs, is missing, or is no longer
//!   generated, so CI catches a CLI change whose pages were not regenerated. It also checks
//!   the library's layering ([`layers`]): it exits 1 naming every import in `common/src` that
//!   runs up the layer order of docs/design.md, and every module cycle.
//!
//! Invariants:
//! - The output is a pure function of the clap definitions and the workspace version: no
//!   date, no terminal width, no environment. `check` can therefore compare bytes.
//! - `gen` owns `packaging/man` and `packaging/completions` entirely: a file there that is not
//!   generated any more is removed, and `check` reports it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod layers;
mod pages;
use clap_complete::Shell;

/// A program's clap command, as its bin crate's `cli()` builds it.
type CliFn = fn() -> clap::Command;

/// The programs of docs/cli.md: (binary name, its clap command).
const PROGRAMS: [(&str, CliFn); 9] = [
    ("reverberator", reverberator::cli),
    ("reverb-watch", reverb_watch::cli),
    ("reverb-mountwatch", reverb_mountwatch::cli),
    ("reverb-snap", reverb_snap::cli),
    ("reverb-retire", reverb_retire::cli),
    ("reverb-index", reverb_index::cli),
    ("reverb-restore", reverb_restore::cli),
    ("reverb-web", reverb_web::cli),
    ("reverb-receive", reverb_receive::cli),
];

/// The directories below `packaging/` that `gen` owns.
const OWNED: [&str; 2] = ["man", "completions"];

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "xtask", about, long_about = None)]
struct Args {
    #[command(subcommand)]
    task: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Task {
    /// Write the man pages and completions into packaging/ (or DIR).
    Gen {
        /// Write below this directory instead of the repository's packaging/.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Fail (exit 1) when the committed man pages or completions are not what `gen` writes,
    /// or when a module of common/src imports a higher layer or is part of a module cycle.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.task {
        Task::Gen { out } => generate_into(&out.unwrap_or_else(packaging_dir)).map(|n| {
            eprintln!("xtask: {n} files up to date");
            ExitCode::SUCCESS
        }),
        Task::Check => check_layers().and_then(|layered| {
            let generated = check()?;
            Ok(if layered {
                generated
            } else {
                ExitCode::FAILURE
            })
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: {e}");
        ExitCode::FAILURE
    })
}

/// The workspace root.
fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// The repository's `packaging/` directory.
fn packaging_dir() -> PathBuf {
    workspace_dir().join("packaging")
}

/// Prints every layering problem of common/src; `true` when there is none.
fn check_layers() -> io::Result<bool> {
    let problems = layers::check_dir(workspace_dir())?;
    for p in &problems {
        eprintln!("xtask: {p}");
    }
    if problems.is_empty() {
        eprintln!("xtask: common/src keeps its layer order and has no module cycle");
    } else {
        eprintln!("xtask: the layer order is in docs/design.md#module-map");
    }
    Ok(problems.is_empty())
}

/// Every generated file, by path relative to `packaging/`.
fn render_all() -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for (name, cli) in PROGRAMS {
        let cmd = cli();
        assert_eq!(
            cmd.get_name(),
            name,
            "cli() of {name} names another program"
        );
        man_pages(cmd.clone(), &mut files)?;
        if name == "reverberator" {
            let page = pages::CONFIG_PAGE.replace("VERSION", env!("CARGO_PKG_VERSION"));
            files.insert(
                Path::new("man").join("reverberator.toml.5"),
                page.into_bytes(),
            );
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let (dir, file) = match shell {
                Shell::Bash => ("bash", format!("{name}.bash")),
                Shell::Zsh => ("zsh", format!("_{name}")),
                _ => ("fish", format!("{name}.fish")),
            };
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut buf);
            files.insert(Path::new("completions").join(dir).join(file), buf);
        }
    }
    Ok(files)
}

/// The page of `cmd` and one page per visible subcommand (`reverberator-run.1`, …).
fn man_pages(cmd: clap::Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) -> io::Result<()> {
    let program = cmd.get_name().to_owned();
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each subcommand its display name `reverberator-run` and bin name `reverberator run`.
    cmd.build();
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let sub_pages: Vec<String> = subcommands.iter().map(page_name).collect();
    for sub in subcommands {
        let mut see_also = vec![program.clone()];
        if sub.get_name() == "restore" {
            see_also.push("reverb-restore".into());
        }
        let page = man_page(sub, &program, &see_also)?;
        files.insert(page.0, page.1);
    }
    let see_also: Vec<String> = sub_pages
        .into_iter()
        .chain(
            PROGRAMS
                .iter()
                .map(|(n, _)| (*n).to_owned())
                .filter(|n| *n != program),
        )
        .collect();
    let page = man_page(cmd, &program, &see_also)?;
    files.insert(page.0, page.1);
    Ok(())
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned()
}

/// One man page: clap_mangen's sections in their usual order, plus EXIT STATUS, ENVIRONMENT
/// (for the `reverberator` pages that look for the configuration file) and SEE ALSO.
fn man_page(
    cmd: clap::Command,
    program: &str,
    see_also: &[String],
) -> io::Result<(PathBuf, Vec<u8>)> {
    let name = page_name(&cmd);
    let reads_config = cmd.get_arguments().any(|a| a.get_id() == "config");
    let has_args = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_extra = cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some();
    let has_version = cmd.get_version().is_some() || cmd.get_long_version().is_some();
    let man = clap_mangen::Man::new(cmd)
        .source(format!("reverberator {}", env!("CARGO_PKG_VERSION")))
        .manual("reverberator");
    let mut w = Vec::new();
    man.render_title(&mut w)?;
    man.render_name_section(&mut w)?;
    man.render_synopsis_section(&mut w)?;
    man.render_description_section(&mut w)?;
    if has_args {
        man.render_options_section(&mut w)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut w)?;
    }
    if has_extra {
        man.render_extra_section(&mut w)?;
    }
    w.write_all(EXIT_STATUS.as_bytes())?;
    if name == program {
        w.write_all(pages::sections(program).as_bytes())?;
    }
    // Only `reverberator` looks for a configuration file; the other programs take --config
    // literally.
    if program == "reverberator" && (reads_config || !name.contains('-')) {
        w.write_all(ENVIRONMENT.as_bytes())?;
    }
    if has_version {
        man.render_version_section(&mut w)?;
    }
    w.write_all(b".SH \"SEE ALSO\"\n")?;
    let refs: Vec<String> = see_also
        .iter()
        .map(|p| format!("\\fB{}\\fR(1)", p.replace('-', "\\-")))
        .collect();
    writeln!(w, "{}", refs.join(", "))?;
    Ok((Path::new("man").join(format!("{name}.1")), w))
}

/// docs/cli.md's exit codes, the same for every program.
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
Failure; the error is printed on stderr as one line naming what failed and why.
.TP
2
Usage or configuration error.
.TP
75
Temporary failure, retry later: the job is locked, or the source or vault is not the
filesystem recorded for it (an unplugged disk).
"#;

/// Where the configuration file is looked for (docs/configuration.md).
const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBREVERBERATOR_CONFIG\fR
The configuration file when \fB\-\-config\fR is not given. Otherwise
\fI$XDG_CONFIG_HOME/reverberator/config.toml\fR (or \fI~/.config/reverberator/config.toml\fR),
then \fI/etc/reverberator/config.toml\fR.
"#;

/// Writes every generated file below `out` and removes files there that are no longer
/// generated. Returns the number of generated files.
fn generate_into(out: &Path) -> io::Result<usize> {
    let files = render_all()?;
    for (rel, bytes) in &files {
        let path = out.join(rel);
        if fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&path, bytes).map_err(|e| with_path(e, &path))?;
    }
    for rel in existing(out)? {
        if !files.contains_key(&rel) {
            let path = out.join(&rel);
            fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
            eprintln!("xtask: removed {}", path.display());
        }
    }
    Ok(files.len())
}

/// The files below `root`'s owned directories, relative to `root`.
fn existing(root: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(with_path(e, dir)),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).expect("walked below root");
                out.push(rel.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for dir in OWNED {
        walk(root, &root.join(dir), &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// Regenerates into a temporary directory and compares with the committed files.
fn check() -> io::Result<ExitCode> {
    let committed = packaging_dir();
    let tmp = tempfile::Builder::new().prefix("xtask-check").tempdir()?;
    let n = generate_into(tmp.path())?;
    let fresh = existing(tmp.path())?;
    let old = existing(&committed)?;
    let mut stale = Vec::new();
    for rel in &fresh {
        let shown = Path::new("packaging").join(rel);
        match fs::read(committed.join(rel)) {
            Ok(bytes) if bytes == fs::read(tmp.path().join(rel))? => {}
            Ok(_) => stale.push(format!("{}: differs", shown.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                stale.push(format!("{}: missing", shown.display()));
            }
            Err(e) => return Err(with_path(e, &committed.join(rel))),
        }
    }
    for rel in old.iter().filter(|r| !fresh.contains(r)) {
        let shown = Path::new("packaging").join(rel);
        stale.push(format!("{}: not generated any more", shown.display()));
    }
    if stale.is_empty() {
        eprintln!("xtask: {n} man pages and completions are up to date");
        return Ok(ExitCode::SUCCESS);
    }
    for s in &stale {
        eprintln!("xtask: stale {s}");
    }
    eprintln!("xtask: run `cargo run -p xtask -- gen` and commit the result");
    Ok(ExitCode::FAILURE)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn output_is_deterministic_and_complete() {
        let a = render_all().expect("render");
        let b = render_all().expect("render");
        assert_eq!(a, b);
        for (name, _) in PROGRAMS {
            assert!(a.contains_key(&Path::new("man").join(format!("{name}.1"))));
            assert!(a.contains_key(&Path::new("completions/zsh").join(format!("_{name}"))));
        }
        assert!(a.contains_key(Path::new("man/reverberator-run.1")));
        assert!(!a.contains_key(Path::new("man/reverberator-help.1")));
    }
}

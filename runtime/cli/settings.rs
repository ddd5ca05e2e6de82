//! Where a node binary's settings come from: its flags, then its environment, then its
//! config file, then the built-in defaults.
//!
//! Each setting is defined once, as a clap argument (`args.rs`): name, help, default and
//! value parser. Its environment variable is named by rule from the long flag
//! ([`with_env`]: `PREFIX_` and the flag in upper case, `-` as `_`), and its key in the
//! config file is the long flag itself; clap parses the values from all three. The file
//! is read as command-line arguments placed below the flags and the environment: each key
//! that neither the command line nor the environment sets becomes `--key=VALUE` (one per
//! item of a list, a bare `--key` for a `true` flag) before clap parses the whole, so a
//! value from the file is checked exactly as the same flag would be, with its `requires`
//! and `conflicts_with` (a `tls-cert` without `tls-key` is refused, not ignored). This is
//! how Python's ConfigArgParse layers files and environment under a command line.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// The id and long name of the config file's argument.
const CONFIG: &str = "config";

/// Why a node binary's settings could not be read: its config file, or a flag or
/// environment variable that clap refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("the config file {} is not TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A key of the config file names no flag.
    #[error(
        "{}:{line}: unknown key `{key}`: settings are named as the long flags \
         (`--help` lists them){hint}",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The line of the key (from 1).
        line: usize,
        /// The key.
        key: String,
        /// A suggestion, or nothing.
        hint: String,
    },
    /// A key of the config file has a value its flag refuses.
    #[error("{}:{line}: `{key}`: {reason}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The line of the key (from 1).
        line: usize,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An environment variable has a value its flag refuses.
    #[error("environment variable {var}: {reason}")]
    BadEnv {
        /// The variable.
        var: String,
        /// Why.
        reason: String,
    },
    /// The command line as clap reports it (a bad or missing flag; also `--help` and
    /// `--version`, which are not failures).
    #[error("{0}")]
    Command(#[from] clap::Error),
}

impl SettingsError {
    /// Prints the error as clap prints its own (`--help` on stdout, the rest on stderr)
    /// and exits: 0 for `--help` and `--version`, 2 otherwise.
    pub fn exit(&self) -> ! {
        let kind = match self {
            Self::Command(error) => error.exit(),
            Self::Read { .. } => ErrorKind::Io,
            Self::Syntax { .. } => ErrorKind::Format,
            Self::UnknownKey { .. } => ErrorKind::UnknownArgument,
            Self::BadValue { .. } | Self::BadEnv { .. } => ErrorKind::ValueValidation,
        };
        clap::Error::raw(kind, format!("{self}\n")).exit()
    }
}

/// The `--config FILE` argument, whose own environment variable [`with_env`] adds.
pub(super) fn config_arg() -> Arg {
    Arg::new(CONFIG)
        .long(CONFIG)
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "A TOML file of settings, each key a long flag: `max-connections = 2048`, \
             `seed = [\"a:7001\", \"b:7001\"]`, `insecure-plaintext = true`, \
             `resume-timeout = \"1m\"`. A flag, then an environment variable, overrides \
             what it says.",
        )
}

/// The environment prefix of a program: its name in upper case, each character other
/// than a letter or digit as `_` (`kv-node` gives `KV_NODE`).
pub(super) fn env_prefix(program: &str) -> String {
    program
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `command` with an environment variable for each of its own arguments that has a long
/// flag and none yet: `PREFIX_` then the flag in upper case, `-` as `_` (`--seed-dns`
/// reads `DUOLOGUE_SEED_DNS`). Subcommands keep theirs.
pub(super) fn with_env(command: Command, prefix: &str) -> Command {
    command.mut_args(|arg| {
        let name = match arg.get_long() {
            Some(long) if arg.get_env().is_none() => {
                format!("{prefix}_{}", long.to_ascii_uppercase().replace('-', "_"))
            }
            _ => return arg,
        };
        arg.env(name)
    })
}

/// Where each argument set by the config file was set: its key and line.
type Origins = HashMap<String, (String, usize)>;

/// Parses `argv` for `command`: its flags, then its environment, then the `--config`
/// file of the (sub)command that has one ([`super::NodeMain::describe`] adds it), then
/// the defaults.
pub(super) fn matches_from(
    command: Command,
    argv: Vec<OsString>,
) -> Result<ArgMatches, SettingsError> {
    let mut built = command.clone();
    built.build();
    // First, the command line alone, errors ignored: which (sub)command runs, the flags
    // it was given, and --config (from a flag or the environment). A help or version
    // request stops here; the full parse below answers it.
    let first = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .ok();
    let Some((leaf, matches)) = first.as_ref().map(|first| leaf_of(&built, first)) else {
        return command
            .try_get_matches_from(argv)
            .map_err(SettingsError::from);
    };
    let on_command_line: HashSet<&str> = leaf
        .get_arguments()
        .map(|arg| arg.get_id().as_str())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    let mut argv = argv;
    if let Some(path) = has_config(leaf)
        .then(|| matches.get_one::<PathBuf>(CONFIG))
        .flatten()
    {
        let layered = ConfigFile::read(path)?.as_arguments(leaf, &on_command_line)?;
        // Below the flags: before a `--` if there is one, else at the end (the command
        // line ends in the subcommand whose settings these are).
        let at = argv
            .iter()
            .skip(1)
            .position(|a| a.as_os_str() == "--")
            .map_or(argv.len(), |i| i + 1);
        argv.splice(at..at, layered);
    }
    command.try_get_matches_from(argv).map_err(|error| {
        // A value clap refused came from a flag, or else from the environment (the
        // file's were checked before).
        match refused(&error, leaf) {
            Some((arg, reason)) if !on_command_line.contains(arg.get_id().as_str()) => {
                match arg.get_env().filter(|var| std::env::var_os(var).is_some()) {
                    Some(var) => SettingsError::BadEnv {
                        var: var.to_string_lossy().into_owned(),
                        reason,
                    },
                    None => error.into(),
                }
            }
            _ => error.into(),
        }
    })
}

/// The (sub)command that runs, and its matches.
fn leaf_of<'a>(
    mut command: &'a Command,
    mut matches: &'a ArgMatches,
) -> (&'a Command, &'a ArgMatches) {
    while let Some((name, sub)) = matches.subcommand() {
        match command.find_subcommand(name) {
            Some(found) => (command, matches) = (found, sub),
            None => break,
        }
    }
    (command, matches)
}

fn has_config(command: &Command) -> bool {
    command.get_arguments().any(|arg| arg.get_id() == CONFIG)
}

/// The argument of `command` whose value clap refused, and why, without clap's framing.
fn refused<'a>(error: &clap::Error, command: &'a Command) -> Option<(&'a Arg, String)> {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let arg = command
        .get_arguments()
        .find(|arg| arg.to_string() == *shown)?;
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => format!("{value:?}"),
        _ => "the value".to_owned(),
    };
    let reason = match (
        std::error::Error::source(error),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => format!("{value}: {source}"),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("{value} is not one of {}", valid.join(", "))
        }
        (None, _) => format!("{value}: {}", error.kind()),
    };
    Some((arg, reason))
}

/// A config file, parsed.
struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// The line (from 1) at byte `span.start` of the file.
    fn line(&self, span: &Range<usize>) -> usize {
        let start = span.start.min(self.text.len());
        self.text.as_bytes()[..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The file's settings as arguments of `command`, but for those the command line
    /// sets (`on_command_line`) or the environment does. Every value is checked by the
    /// flag's parser, used or not.
    fn as_arguments(
        &self,
        command: &Command,
        on_command_line: &HashSet<&str>,
    ) -> Result<Vec<OsString>, SettingsError> {
        let table = DeTable::parse(&self.text).map_err(|error| SettingsError::Syntax {
            path: self.path.clone(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        // In the file's order, so the first mistake reported is the first one made.
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut all = Vec::new();
        let mut used = Vec::new();
        let mut origins = Origins::new();
        for (key, value) in entries {
            let line = self.line(&key.span());
            let key = key.get_ref().as_ref();
            let bad = |reason: String| SettingsError::BadValue {
                path: self.path.clone(),
                line,
                key: key.to_owned(),
                reason,
            };
            if let DeValue::Table(_) = value.get_ref() {
                return Err(bad(kind(value.get_ref()).to_owned()));
            }
            let arg = setting(command, key).ok_or_else(|| SettingsError::UnknownKey {
                path: self.path.clone(),
                line,
                key: key.to_owned(),
                hint: hint(command, key),
            })?;
            if arg.get_id() == CONFIG {
                return Err(bad("a config file cannot name another".to_owned()));
            }
            let arguments: Vec<OsString> = flag_values(arg, value.get_ref())
                .map_err(bad)?
                .into_iter()
                .map(|value| match value {
                    Some(value) => format!("--{key}={value}").into(),
                    None => format!("--{key}").into(),
                })
                .collect();
            let id = arg.get_id().as_str();
            let in_env = arg
                .get_env()
                .is_some_and(|var| std::env::var_os(var).is_some());
            if !on_command_line.contains(id) && !in_env {
                used.extend(arguments.iter().cloned());
            }
            all.extend(arguments);
            origins.insert(id.to_owned(), (key.to_owned(), line));
        }
        self.check(command, all, &origins)?;
        Ok(used)
    }

    /// Parses `arguments` (the whole file's) with `command`'s parsers, alone (no
    /// environment, nothing required): a value a flag refuses is the file's error.
    fn check(
        &self,
        command: &Command,
        arguments: Vec<OsString>,
        origins: &Origins,
    ) -> Result<(), SettingsError> {
        let alone = command
            .clone()
            .no_binary_name(true)
            .mut_args(|arg| arg.env(None));
        let Err(error) = alone.try_get_matches_from(arguments) else {
            return Ok(());
        };
        match refused(&error, command)
            .and_then(|(arg, reason)| Some((origins.get(arg.get_id().as_str())?, reason)))
        {
            Some(((key, line), reason)) => Err(SettingsError::BadValue {
                path: self.path.clone(),
                line: *line,
                key: key.clone(),
                reason,
            }),
            // Only value errors are the file's alone: a missing flag may come from
            // elsewhere, and the full parse checks the rest.
            None => Ok(()),
        }
    }
}

/// The argument a file key names: its long flag, never help or version.
fn setting<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(key)
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// For a key written with `_` that names a flag with `-`: which.
fn hint(command: &Command, key: &str) -> String {
    let dashed = key.trim_start_matches('-').replace('_', "-");
    match setting(command, &dashed) {
        Some(_) if dashed != key => format!(" (did you mean `{dashed}`?)"),
        _ => String::new(),
    }
}

/// The command-line values of `value` for `arg`: one for a single value, one per item
/// of a list for a repeatable flag; `None` is a bare flag (a `true` switch). A `false`
/// switch gives none.
fn flag_values(arg: &Arg, value: &DeValue<'_>) -> Result<Vec<Option<String>>, String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            DeValue::Boolean(on) => {
                let raise = *on == matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(if raise { vec![None] } else { Vec::new() })
            }
            other => Err(format!("{} where true or false was expected", kind(other))),
        },
        ArgAction::Append => match value {
            DeValue::Array(items) => items
                .iter()
                .map(|item| scalar(item.get_ref()).map(Some))
                .collect(),
            single => Ok(vec![Some(scalar(single)?)]),
        },
        _ => match value {
            DeValue::Array(_) => Err("a list, where one value was expected".to_owned()),
            single => Ok(vec![Some(scalar(single)?)]),
        },
    }
}

/// One TOML value as the flag would be given it.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(text) => Ok(text.to_string()),
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("integer {integer}: {e}")),
        DeValue::Float(float) => Ok(float.as_str().to_owned()),
        DeValue::Boolean(on) => Ok(on.to_string()),
        other => Err(format!("{} where a value was expected", kind(other))),
    }
}

fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table: settings are top-level keys, named as the long flags",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Stdio};
    use std::time::Duration;

    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};

    use super::SettingsError;
    use crate::cli::{LogFormat, NodeCli, NodeMain, try_get_matches_from};
    use crate::config::{AdmissionConfig, RuntimeFlavor};

    /// A config file in the temporary directory, removed on drop.
    struct ConfigFile(PathBuf);

    impl ConfigFile {
        fn new(test: &str, text: &str) -> Self {
            let name = format!("duologue-settings-{}-{test}.toml", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The program of these tests: its variables are `PROBE_...`.
    fn probe() -> clap::Command {
        NodeMain::new("probe").describe(NodeCli::command())
    }

    /// `probe` with `--config FILE` (if any), then `flags`.
    fn parse(file: Option<&ConfigFile>, flags: &[&str]) -> Result<NodeCli, SettingsError> {
        let mut argv = vec!["probe".to_owned()];
        argv.extend(file.map(|file| format!("--config={}", file.0.display())));
        argv.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let matches = try_get_matches_from(probe(), argv)?;
        Ok(NodeCli::from_arg_matches(&matches).unwrap())
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let file = ConfigFile::new(
            "precedence",
            "name = \"from-file\"\nsecret-file = \"/s\"\nlisten = \"127.0.0.1:7000\"\n\
             max-connections = 2048\n",
        );
        let cli = parse(Some(&file), &["--listen", "127.0.0.2:7000"]).unwrap();
        assert_eq!(cli.node.listen, addr("127.0.0.2:7000"), "the flag");
        assert_eq!(cli.node.name, "from-file", "the file");
        assert_eq!(cli.node.admission.max_connections, 2048, "the file");
        assert_eq!(
            cli.node.admission.max_admin_connections,
            AdmissionConfig::default().max_admin_connections,
            "the default"
        );
        assert_eq!(cli.node.timing.resume_timeout, Duration::from_secs(30));
        // Without the file, the default; without --name anywhere, clap's own error.
        let error = parse(None, &["--secret-file", "/s"]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::Command(e) if e.kind() == ErrorKind::MissingRequiredArgument),
            "{error:?}"
        );
    }

    #[test]
    fn lists_switches_numbers_and_durations_come_from_the_file() {
        let file = ConfigFile::new(
            "kinds",
            r#"
            name = "n"
            secret-file = "/s"
            gossip-listen = "127.0.0.1:0"
            seed = ["a:7001", "b:7001"]
            seed-dns = "all.example:7001"   # one value for a repeatable flag
            actor = ["chat-room:general", "seq-check:ticks@100"]
            insecure-plaintext = true
            allow-weak-secret = false
            resume-timeout = "1m 30s"
            phi-threshold = 9.5
            max-names = 0x10
            runtime = "current-thread"
            log-format = "json"
            "#,
        );
        let cli = parse(Some(&file), &[]).unwrap();
        let cluster = &cli.node.cluster;
        assert_eq!(cluster.gossip_listen, Some(addr("127.0.0.1:0")));
        assert_eq!(cluster.seeds, ["a:7001", "b:7001"]);
        assert_eq!(cluster.seed_dns, ["all.example:7001"]);
        let actors: Vec<String> = cli.node.actors.iter().map(ToString::to_string).collect();
        assert_eq!(actors, ["chat-room:general", "seq-check:ticks@100"]);
        assert!(cli.node.tls.insecure_plaintext);
        assert!(!cli.node.allow_weak_secret);
        assert_eq!(cli.node.timing.resume_timeout, Duration::from_secs(90));
        assert!((cluster.phi_threshold - 9.5).abs() < f64::EPSILON);
        assert_eq!(cli.node.admission.max_names, 16);
        assert_eq!(cli.runtime, RuntimeFlavor::CurrentThread);
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn a_list_on_the_command_line_replaces_the_files() {
        let file = ConfigFile::new(
            "lists",
            "name = \"n\"\nsecret-file = \"/s\"\ngossip-listen = \"127.0.0.1:0\"\n\
             seed = [\"a:7001\", \"b:7001\"]\n",
        );
        let cli = parse(
            Some(&file),
            &["--seed", "c:7001,d:7001", "--seed", "e:7001"],
        )
        .unwrap();
        assert_eq!(cli.node.cluster.seeds, ["c:7001", "d:7001", "e:7001"]);
    }

    #[test]
    fn the_files_settings_are_checked_as_flags_are() {
        // --tls-cert needs --tls-key: from a file as from the command line, never a node
        // that silently serves plaintext.
        let file = ConfigFile::new(
            "requires",
            "name = \"n\"\nsecret-file = \"/s\"\ntls-cert = \"/c.pem\"\n",
        );
        let error = parse(Some(&file), &[]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::Command(e) if e.kind() == ErrorKind::MissingRequiredArgument),
            "{error:?}"
        );
        // A file's switch against a flag it conflicts with.
        let file = ConfigFile::new(
            "conflicts",
            "name = \"n\"\nsecret-file = \"/s\"\ninsecure-plaintext = true\n",
        );
        let flags = ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"];
        let error = parse(Some(&file), &flags).unwrap_err();
        assert!(
            matches!(&error, SettingsError::Command(e) if e.kind() == ErrorKind::ArgumentConflict),
            "{error:?}"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_key_and_the_file() {
        let file = ConfigFile::new("unknown", "name = \"n\"\n\nmax-conections = 1\n");
        let error = parse(Some(&file), &[]).unwrap_err();
        let SettingsError::UnknownKey {
            path, line, key, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!((path, *line, key.as_str()), (&file.0, 3, "max-conections"));
        let text = error.to_string();
        assert!(text.contains(&file.0.display().to_string()), "{text}");
        assert!(text.contains("max-conections"), "{text}");

        let file = ConfigFile::new("snake", "max_connections = 1\n");
        let error = parse(Some(&file), &[]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::UnknownKey { hint, .. } if hint.contains("`max-connections`")),
            "{error:?}"
        );
        for key in ["help", "version", "--name"] {
            let file = ConfigFile::new("meta", &format!("\"{key}\" = true\n"));
            let error = parse(Some(&file), &[]).unwrap_err();
            assert!(
                matches!(&error, SettingsError::UnknownKey { .. }),
                "{key}: {error:?}"
            );
        }
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key_and_the_file() {
        let cases = [
            ("max-connections = \"lots\"", "max-connections", "\"lots\""),
            ("max-connections = -1", "max-connections", "\"-1\""),
            ("resume-timeout = 30", "resume-timeout", "not a duration"),
            ("listen = \"nowhere\"", "listen", "\"nowhere\""),
            ("listen = [\"127.0.0.1:1\"]", "listen", "a list"),
            (
                "insecure-plaintext = \"yes\"",
                "insecure-plaintext",
                "true or false",
            ),
            ("policy = \"sometimes\"", "policy", "resume, restart"),
            ("log-format = \"xml\"", "log-format", "text, json"),
            ("seed = [[\"a:1\"]]", "seed", "a list"),
            ("actor = [\"no-colon\"]", "actor", "KIND:NAME"),
            ("[cluster]\nseed = \"a:1\"", "cluster", "a table"),
            ("cluster-id = 1979-05-27", "cluster-id", "a date-time"),
            ("started = true", "started", "unknown key"),
            ("config = \"other.toml\"", "config", "another"),
        ];
        for (text, key, says) in cases {
            let file = ConfigFile::new("bad", &format!("name = \"n\"\n{text}\n"));
            let error = parse(Some(&file), &[]).unwrap_err();
            let shown = error.to_string();
            assert!(
                matches!(
                    &error,
                    SettingsError::BadValue { path, line: 2, key: k, .. }
                        | SettingsError::UnknownKey { path, line: 2, key: k, .. }
                        if *path == file.0 && k == key
                ),
                "{text}: {error:?}"
            );
            assert!(shown.contains(says), "{text}: {shown}");
            assert!(
                shown.contains(&format!("{}:2", file.0.display())),
                "{shown}"
            );
        }
        // Checked even where a flag overrides it: the file is wrong either way.
        let file = ConfigFile::new("overridden", "max-connections = \"lots\"\n");
        let error = parse(Some(&file), &["--max-connections", "5"]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::BadValue { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_or_is_not_toml_is_an_error_naming_it() {
        let file = ConfigFile::new("syntax", "name = \n");
        let error = parse(Some(&file), &[]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::Syntax { path, message } if *path == file.0 && message.contains("line 1")),
            "{error:?}"
        );
        let missing = ConfigFile::new("missing", "");
        std::fs::remove_file(&missing.0).unwrap();
        let error = parse(Some(&missing), &[]).unwrap_err();
        assert!(
            matches!(&error, SettingsError::Read { path, .. } if *path == missing.0),
            "{error:?}"
        );
    }

    #[test]
    fn help_names_each_flags_environment_variable() {
        let help = probe().render_long_help().to_string();
        for var in [
            "PROBE_SEED",
            "PROBE_METRICS_ALLOW_HOST",
            "PROBE_CONFIG",
            "PROBE_RUNTIME",
        ] {
            assert!(
                help.contains(&format!("[env: {var}")),
                "{var} missing from:\n{help}"
            );
        }
        assert_eq!(super::env_prefix("kv-node"), "KV_NODE");
        let own = NodeMain::new("kv-node").env_prefix("KV");
        let help = own
            .describe(NodeCli::command())
            .render_long_help()
            .to_string();
        assert!(help.contains("[env: KV_MAX_CONNECTIONS"), "{help}");
    }

    /// A binary with commands beside `node`, global flags among them, as `duologue` is.
    #[derive(Debug, clap::Parser)]
    struct Outer {
        #[arg(long, global = true, value_enum, default_value = "text")]
        log_format: LogFormat,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Node(Box<crate::cli::NodeArgs>),
        Other,
    }

    fn outer(argv: &[&str]) -> Result<Outer, SettingsError> {
        let main = NodeMain::new("outer");
        let command = main
            .with_env(Outer::command())
            .mut_subcommand("node", |node| main.describe(node));
        let matches = try_get_matches_from(command, argv.iter().copied())?;
        Ok(Outer::from_arg_matches(&matches).unwrap())
    }

    #[test]
    fn a_subcommands_file_sets_global_flags_under_the_command_line() {
        let file = ConfigFile::new(
            "global",
            "name = \"n\"\nsecret-file = \"/s\"\nlog-format = \"json\"\nmax-hosted = 3\n",
        );
        let config = format!("--config={}", file.0.display());
        let cli = outer(&["outer", "node", &config]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json, "the file");
        let Sub::Node(node) = &cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(node.name, "n");
        assert_eq!(node.admission.max_hosted, 3);
        // The global flag given before the subcommand, or after it, beats the file.
        for argv in [
            ["outer", "--log-format", "text", "node", config.as_str()],
            ["outer", "node", "--log-format", "text", config.as_str()],
        ] {
            let cli = outer(&argv).unwrap();
            assert_eq!(cli.log_format, LogFormat::Text, "{argv:?}");
        }
        // Another command has no --config.
        assert!(outer(&["outer", "other", &config]).is_err());
        assert!(matches!(
            outer(&["outer", "other"]).unwrap().command,
            Sub::Other
        ));
    }

    #[test]
    fn the_deploy_example_file_is_read_as_it_says() {
        let file = ConfigFile::new("deploy", include_str!("../../deploy/node.toml"));
        let cli = parse(Some(&file), &["--name", "duologue-0"]).unwrap();
        assert_eq!(cli.node.listen, addr("0.0.0.0:7000"));
        assert_eq!(cli.node.cluster.gossip_listen, Some(addr("0.0.0.0:7001")));
        assert!(cli.node.tls.insecure_plaintext);
    }

    // clap reads the process's environment, which a test may not change (`set_var` is
    // unsafe, and races the other tests' threads): these run `probe_in_child` again in a
    // child process of this test binary, with the environment set there.

    #[test]
    fn the_environment_beats_the_file_and_a_flag_beats_the_environment() {
        let file = ConfigFile::new(
            "env",
            "name = \"from-file\"\nsecret-file = \"/s\"\nmax-connections = 2048\n\
             max-names = 7\ngossip-listen = \"127.0.0.1:0\"\nseed = [\"file:7001\"]\n",
        );
        let config = file.0.display().to_string();
        in_child(
            "precedence",
            &[
                ("PROBE_CONFIG", config.as_str()),
                ("PROBE_MAX_CONNECTIONS", "99"),
                ("PROBE_SEED", "env-a:7001,env-b:7001"),
                ("PROBE_ACTOR", "chat-room:a,chat-room:b"),
                ("PROBE_LISTEN", "127.0.0.3:1"),
                ("PROBE_INSECURE_PLAINTEXT", "true"),
            ],
        );
    }

    #[test]
    fn a_bad_environment_variable_is_an_error_naming_it() {
        let file = ConfigFile::new(
            "bad-env",
            "name = \"n\"\nsecret-file = \"/s\"\nmax-hosted = 5\n",
        );
        let config = file.0.display().to_string();
        in_child(
            "bad-env",
            &[
                ("PROBE_CONFIG", config.as_str()),
                ("PROBE_MAX_HOSTED", "lots"),
            ],
        );
    }

    /// What `in_child` runs, in the child (a no-op elsewhere).
    #[test]
    #[ignore = "run in a child process, with its environment, by the tests above"]
    fn probe_in_child() {
        let Ok(case) = std::env::var("PROBE_CASE") else {
            return;
        };
        match case.as_str() {
            "precedence" => {
                let cli = parse(None, &["--listen", "127.0.0.4:1"]).unwrap();
                assert_eq!(cli.node.listen, addr("127.0.0.4:1"), "the flag");
                assert_eq!(cli.node.admission.max_connections, 99, "the environment");
                assert_eq!(cli.node.cluster.seeds, ["env-a:7001", "env-b:7001"]);
                let actors: Vec<String> = cli.node.actors.iter().map(ToString::to_string).collect();
                assert_eq!(actors, ["chat-room:a", "chat-room:b"]);
                assert!(cli.node.tls.insecure_plaintext, "the environment");
                assert_eq!(
                    cli.node.name, "from-file",
                    "the file, named by PROBE_CONFIG"
                );
                assert_eq!(cli.node.admission.max_names, 7, "the file");
                assert_eq!(
                    cli.node.admission.max_hosted,
                    crate::NodeConfig::default().max_hosted,
                    "the default"
                );
            }
            "bad-env" => {
                let error = parse(None, &[]).unwrap_err();
                assert!(
                    matches!(&error, SettingsError::BadEnv { var, reason }
                        if var == "PROBE_MAX_HOSTED" && reason.contains("\"lots\"")),
                    "{error:?}"
                );
                assert!(error.to_string().contains("PROBE_MAX_HOSTED"), "{error}");
            }
            other => panic!("no case {other}"),
        }
    }

    /// Runs `probe_in_child` as `case` in a child process with `env`, within 60 s, and
    /// fails unless it passed. The child is killed on every path.
    fn in_child(case: &str, env: &[(&str, &str)]) {
        struct Reaped(Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "cli::settings::tests::probe_in_child",
                "--ignored",
            ])
            .env("PROBE_CASE", case)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Reaped(command.spawn().unwrap());
        let mut stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        let text = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child test did not finish within 60 s");
        let status = child.0.wait().unwrap();
        assert!(
            status.success() && text.contains("1 passed"),
            "the child test failed ({status}):\n{text}"
        );
    }
}

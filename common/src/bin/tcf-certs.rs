//! `tcf-certs --out DIR [--force] [NAME...]`: writes a development CA and a
//! certificate per component (default: gateway destination worker etcd
//! haproxy) into DIR. See `tcf_common::devcerts` for what is written.
//!
//! Refuses to replace an existing CA in DIR unless `--force` is given
//! (replacing it invalidates every certificate it signed). Exit status: 0 on
//! success, 1 when writing fails, 2 on bad usage.

use std::{path::PathBuf, process::ExitCode};

use tcf_common::devcerts::{self, DEFAULT_COMPONENTS};

const USAGE: &str = "usage: tcf-certs --out DIR [--force] [NAME...]\n\
    Writes DIR/ca.pem, DIR/ca-key.pem and DIR/NAME.pem, DIR/NAME-key.pem for each NAME\n\
    (default: gateway destination worker etcd haproxy). Development use only.";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let mut force = false;
    let mut names: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" | "-o" => match args.next() {
                Some(dir) => out = Some(PathBuf::from(dir)),
                None => return usage("--out needs a directory"),
            },
            "--force" | "-f" => force = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            _ => names.push(arg),
        }
    }
    let Some(out) = out else {
        return usage("--out DIR is required");
    };
    let names: Vec<&str> = if names.is_empty() {
        DEFAULT_COMPONENTS.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let ca = out.join("ca.pem");
    let ca_key = out.join("ca-key.pem");
    if !force && (ca.exists() || ca_key.exists()) {
        eprintln!(
            "tcf-certs: {} already holds a CA; pass --force to replace it \
             (every certificate it signed stops being trusted)",
            out.display()
        );
        return ExitCode::from(1);
    }
    match devcerts::generate(&out, &names) {
        Ok(written) => {
            println!("{} {}", written.ca.cert.display(), written.ca.key.display());
            for c in &written.components {
                println!("{} {}", c.cert.display(), c.key.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tcf-certs: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("tcf-certs: {problem}\n{USAGE}");
    ExitCode::from(2)
}

//! Which functions of a TLS library get which probes, and where in the
//! file: an entry uprobe and a uretprobe on each function's first
//! instruction, or, where that instruction would be single-stepped and the
//! function allows it (see `sites`), uprobes on emulated instructions at
//! entry and before each return.

use super::elf::{self, ElfError, FileSymbol};
use super::shared_callee::{self, SharedCallee};
use std::collections::HashMap;

/// One probed function and its BPF programs.
pub struct TlsFunction {
    /// Symbol.
    pub name: &'static str,
    /// Reads the arguments (uprobe).
    pub entry: &'static str,
    /// Reads the result at return (uretprobe); `None`: only the entry is
    /// probed (BoringSSL's `bio_write`, whose arguments are all it needs).
    pub uretprobe: Option<&'static str>,
    /// Reads the result on a return site (uprobe); `None`: always a uretprobe.
    pub return_site: Option<&'static str>,
    /// Arguments the entry program reads.
    pub args: usize,
}

impl TlsFunction {
    /// Every program this function may use.
    pub fn programs(&self) -> impl Iterator<Item = &'static str> {
        [Some(self.entry), self.uretprobe, self.return_site].into_iter().flatten()
    }
}

/// One attachment: a program at a file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// BPF program.
    pub program: &'static str,
    /// File offset.
    pub offset: u64,
    /// `uprobe` or `uretprobe`, for the `probe attached` line.
    pub kind: &'static str,
    /// The function, and where in it when not at its start (`SSL_read+0x16`,
    /// `SSL_read+0x38 (return)`).
    pub label: String,
}

/// What to attach for one function, or the symbol it lacks.
pub type FunctionPlan = Result<Vec<ProbePoint>, &'static str>;

/// Plans every function of `functions` in the ELF file `data`, with the
/// functions a found shared callee stands for probed on it instead (see
/// `shared_callee`): its entry and uretprobe go in the plan of the function
/// whose first call it is, the others get none.
pub fn plan(
    data: &[u8],
    functions: &[TlsFunction],
    callees: &[SharedCallee],
) -> Result<Vec<FunctionPlan>, ElfError> {
    let names: Vec<&str> = functions.iter().map(|f| f.name).collect();
    let symbols = elf::symbol_offsets(data, &names)?;
    let mut plans = plan_located(data, functions, &symbols);
    for callee in callees {
        let Some(at) = shared_callee::find(data, &symbols, callee) else { continue };
        let label = format!("{} ({})", callee.name, callee.callers().collect::<Vec<_>>().join(", "));
        let points = vec![
            ProbePoint { program: callee.entry, offset: at, kind: "uprobe", label: label.clone() },
            ProbePoint { program: callee.uretprobe, offset: at, kind: "uretprobe", label },
        ];
        for (f, plan) in functions.iter().zip(plans.iter_mut()) {
            if f.name == callee.first_call_of {
                *plan = Ok(points.clone());
            } else if callee.also_called_by.contains(&f.name) {
                *plan = Ok(Vec::new());
            }
        }
    }
    Ok(plans)
}

/// Plans every function of `functions` at the offsets `symbols` gives
/// (from the symbol table, or found otherwise: `nss_methods`).
pub fn plan_located(
    data: &[u8],
    functions: &[TlsFunction],
    symbols: &HashMap<String, FileSymbol>,
) -> Vec<FunctionPlan> {
    functions
        .iter()
        .map(|f| {
            let sym = symbols.get(f.name).ok_or(f.name)?;
            let code = data.get(sym.offset as usize..(sym.offset + sym.size) as usize).unwrap_or(&[]);
            Ok(plan_function(f, sym.offset, code))
        })
        .collect()
}

fn plan_function(f: &TlsFunction, offset: u64, code: &[u8]) -> Vec<ProbePoint> {
    let sites = match f.return_site {
        Some(site) if cfg!(target_arch = "x86_64") => {
            super::sites::x86_64_sites(code, f.args).map(|s| (s, site))
        }
        _ => None,
    };
    let Some((sites, return_site)) = sites else {
        let entry = ProbePoint { program: f.entry, offset, kind: "uprobe", label: f.name.to_string() };
        let exit = f.uretprobe.map(|program| ProbePoint {
            program,
            offset,
            kind: "uretprobe",
            label: f.name.to_string(),
        });
        return [Some(entry), exit].into_iter().flatten().collect();
    };
    let at = |o: u64| if o == 0 { f.name.to_string() } else { format!("{}+{o:#x}", f.name) };
    let mut points = vec![ProbePoint {
        program: f.entry,
        offset: offset + sites.entry,
        kind: "uprobe",
        label: at(sites.entry),
    }];
    points.extend(sites.returns.iter().map(|&r| ProbePoint {
        program: return_site,
        offset: offset + r,
        kind: "uprobe",
        label: format!("{} (return)", at(r)),
    }));
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::openssl::SSL_FUNCTIONS;

    #[test]
    fn debian_libssl_read_and_write_use_sites_and_the_ex_forms_keep_uretprobes() {
        // ci/install.sh installs libssl-dev.
        let data = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        let plans = plan(&data, &SSL_FUNCTIONS, &[]).unwrap();
        let kinds = |p: &FunctionPlan| p.as_ref().unwrap().iter().map(|pt| pt.kind).collect::<Vec<_>>();
        for (f, p) in SSL_FUNCTIONS.iter().zip(&plans) {
            let points = p.as_ref().unwrap();
            if f.name.ends_with("_ex") {
                // `sub $8,%rsp; call …` then the result is changed just before `ret`.
                assert_eq!(kinds(p), ["uprobe", "uretprobe"], "{}", f.name);
                assert_eq!(points[0].label, f.name);
            } else {
                assert_eq!(kinds(p), ["uprobe", "uprobe"], "{}: {points:?}", f.name);
                assert!(points[0].label.starts_with(&format!("{}+0x", f.name)));
                assert!(points[1].label.ends_with("(return)") && Some(points[1].program) == f.return_site);
            }
        }
    }

    #[test]
    fn debian_libssl_is_probed_on_its_two_internal_functions() {
        use crate::probes::openssl::SHARED_CALLEES;
        let data = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        let plans = plan(&data, &SSL_FUNCTIONS, &SHARED_CALLEES).unwrap();
        let points: Vec<ProbePoint> = plans.into_iter().flat_map(Result::unwrap).collect();
        let labels: Vec<(&str, &str)> = points.iter().map(|p| (p.kind, p.label.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("uprobe", "ssl_write_internal (SSL_write_ex, SSL_write)"),
                ("uretprobe", "ssl_write_internal (SSL_write_ex, SSL_write)"),
                ("uprobe", "ssl_read_internal (SSL_read_ex, SSL_read)"),
                ("uretprobe", "ssl_read_internal (SSL_read_ex, SSL_read)"),
            ]
        );
        assert_eq!(points[0].offset, points[1].offset);
        assert_ne!(points[0].offset, points[2].offset);
    }

    #[test]
    fn a_missing_symbol_is_named() {
        let data =
            std::fs::read("/usr/lib/x86_64-linux-gnu/libcrypto.so.3").expect("the system libcrypto.so.3");
        let plans = plan(&data, &SSL_FUNCTIONS, &[]).unwrap();
        assert!(plans.iter().all(|p| p.is_err()));
        assert_eq!(plans[2], Err("SSL_read"));
    }
}

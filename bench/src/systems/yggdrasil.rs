//! yggdrasil: why it is not measured in this lab.

/// Why yggdrasil is not measured here, or None when it could be.
pub fn yggdrasil_skip_reason() -> String {
    let installed = std::process::Command::new("sh")
        .args(["-c", "command -v yggdrasil"])
        .output()
        .is_ok_and(|o| o.status.success());
    let package = if installed {
        "the yggdrasil package is installed, but"
    } else {
        "the yggdrasil package is not installed (`apt-get install yggdrasil`), and in any case"
    };
    format!(
        "yggdrasil skipped: {package} yggdrasil 0.4 puts its TUN addresses in 200::/7, derived from its key and not configurable; this lab may only use 198.18.0.0/15 and fd00::/8, so traffic through yggdrasil's TUN addresses cannot be measured here"
    )
}

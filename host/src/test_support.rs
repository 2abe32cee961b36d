//! Helpers shared by unit tests in more than one module.

/// `VmFlags` of each mapping in `/proc/self/smaps` starting at one of `starts`.
pub(crate) fn vm_flags(starts: &[usize]) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut out = Vec::new();
    let mut current = false;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if current {
                out.push(flags.trim().to_string());
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, _)) = range.split_once('-') {
                if let Ok(a) = usize::from_str_radix(a, 16) {
                    current = starts.contains(&a);
                }
            }
        }
    }
    out
}

//! Kernel arguments as libostree edits them for rpm-ostreed's `KernelArgs` (ostree:
//! src/libostree/ostree-kernel-args.c): an ordered list of `key[=value]` entries, edited by key.

/// ostree: ostree-kernel-args.c split_kernel_args — whitespace separates arguments except inside
/// double quotes.
pub fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn key_value(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (arg, None),
    }
}

/// An ordered kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs(Vec<(String, Option<String>)>);

impl KernelArgs {
    /// ostree: ostree_kernel_args_from_string.
    pub fn parse(s: &str) -> Self {
        let mut k = Self::default();
        for a in split(s) {
            k.append(&a);
        }
        k
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect()
    }

    fn entries(&self, key: &str) -> Vec<usize> {
        (0..self.0.len()).filter(|i| self.0[*i].0 == key).collect()
    }

    /// ostree: ostree_kernel_args_append — a new entry at the end, even if the key exists.
    pub fn append(&mut self, arg: &str) {
        let (k, v) = key_value(arg);
        self.0.push((k.to_string(), v.map(str::to_string)));
    }

    pub fn contains(&self, arg: &str) -> bool {
        self.to_vec().iter().any(|a| a == arg)
    }

    /// ostree: ostree_kernel_args_delete, with its error texts.
    pub fn delete(&mut self, arg: &str) -> Result<(), String> {
        let (key, val) = key_value(arg);
        let entries = self.entries(key);
        if entries.is_empty() {
            return Err(format!("No key '{key}' found"));
        }
        // "we allow deleting by key only if there's only one val"
        if entries.len() == 1 {
            let i = entries[0];
            if val.is_some() && self.0[i].1.as_deref() != val {
                return Err(format!("No karg '{key}={}' found", val.unwrap_or_default()));
            }
            self.0.remove(i);
            return Ok(());
        }
        match entries.iter().find(|i| self.0[**i].1.as_deref() == val) {
            Some(i) => {
                self.0.remove(*i);
                Ok(())
            }
            None if val.is_none() => Err(format!("Multiple values for key '{arg}' found")),
            None => Err(format!("No karg '{arg}' found")),
        }
    }

    /// ostree: ostree_kernel_args_new_replace (`key=new` for a single value, `key=old=new` otherwise).
    pub fn replace(&mut self, arg: &str) -> Result<(), String> {
        let (key, val) = key_value(arg);
        let entries = self.entries(key);
        if entries.is_empty() {
            return Err(format!("No key '{key}' found"));
        }
        if let Some((old, new)) = val.and_then(|v| v.split_once('=')) {
            let i = entries
                .iter()
                .find(|i| self.0[**i].1.as_deref() == Some(old))
                .ok_or_else(|| format!("No karg '{key}={old}' found"))?;
            self.0[*i].1 = Some(new.to_string());
            return Ok(());
        }
        if entries.len() > 1 {
            return Err(format!("Multiple values for key '{key}' found"));
        }
        self.0[entries[0]].1 = val.map(str::to_string);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_follow_libostree() {
        let mut k = KernelArgs::parse("rw console=tty0 console=ttyS0 quiet \"a b\"");
        assert_eq!(k.to_vec().last().unwrap(), "\"a b\"");
        assert_eq!(
            k.delete("console").unwrap_err(),
            "Multiple values for key 'console' found"
        );
        k.delete("console=tty0").unwrap();
        k.delete("console").unwrap();
        assert_eq!(k.delete("nosmt").unwrap_err(), "No key 'nosmt' found");
        assert_eq!(k.delete("rw=1").unwrap_err(), "No karg 'rw=1' found");
        k.append("hugepages=2");
        k.replace("hugepages=4").unwrap();
        assert_eq!(k.to_vec(), ["rw", "quiet", "\"a b\"", "hugepages=4"]);
    }
}

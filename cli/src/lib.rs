//! The `umdflow` binary's side of the split: the kinds it ships. The engine (`umdflow-engine`)
//! takes this registry as a parameter; the fuzz test uses it too.

pub mod registry;

//! Data loaders (see the submodules).

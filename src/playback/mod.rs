//! Playback planning from the index: which fragments of which files make a
//! span (select), an export file, an HLS playlist. Pure functions over index
//! rows and file bytes, read through a `source::MediaStore` (the local disk or
//! a bucket); the web layer serves what they plan.

pub mod export;
pub mod hls;
pub mod select;
pub mod source;

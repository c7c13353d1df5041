//! The CMS: live blogs, alert banners and collections, edited in a small admin site or
//! through the content API, published as static JSON through the publisher. Readers never
//! touch the CMS or its database.

pub mod api;
pub mod auth;
pub mod cms;
pub mod db;
pub mod output;
pub mod render;
pub mod ui;

pub use cms::{Cms, CmsError, Publish};
pub use db::CmsDb;
pub use levee_publish::clock::{self, Clock};

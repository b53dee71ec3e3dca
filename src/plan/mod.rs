//! The planner: a YAML [`policy`] and the measured scores give a [`planner::Plan`] of
//! units to remove or mask and layers to freeze or train.

pub mod criteria;
pub mod planner;
pub mod policy;
pub mod schedule;

pub use planner::{make_plan, Plan, Scores};
pub use policy::PolicyFile;

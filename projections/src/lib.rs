//! Pure folds over events: no I/O, no async.
//!
//! - [`ContractState`] (`state`): everything known of one contract, each fact with the
//!   position and date it came with. The ledger keeps one per contract to decide on writes;
//!   every view is computed from it.
//! - [`admit`] (`rules`): SPEC section 4's rules for a proposed event.
//! - [`BillingState`] (`billing`): what deciding on the next invoice or payment needs of a
//!   contract, about a fifth of its state: a writer keeps it for contracts it does not hold
//!   whole, and decides with the full state whenever it is not sure.
//! - [`Figures`] (`figures`): headline, transaction price, recognized revenue, RPO, … as of
//!   any date and known at any position.
//! - [`Summary`] (`summary`): what a portfolio needs of a contract, its billing kept as
//!   sums by date, so that every contract's can stay in memory.
//! - `close`: the reports a period close is made of (rollforward, RPO disclosure, waterfall,
//!   corrections, the dashboard's chart), each a function of one state and points of view;
//!   `report` renders them as JSON and CSV.

mod billing;
mod book;
mod chain;
mod close;
mod eventfacts;
mod figures;
mod idindex;
mod rules;
pub mod report;
mod state;
mod summary;
mod view;

pub use billing::BillingState;
pub use book::Book;
pub use chain::{fold, fold_into, seal, seal_billing, Sealing, Tip};
pub use close::*;
pub use figures::{earned_days, ratable, Figures, Overflow, TrancheFigures, TrancheStatus};
pub use rules::admit;
pub use idindex::IdIndex;
pub use eventfacts::EventFacts;
pub use state::*;
pub use summary::{Contract, Steps, Summary};
pub use view::*;

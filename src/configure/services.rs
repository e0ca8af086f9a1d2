//! The recipe's `[services]` table.

pub mod ff;
pub mod layers;
pub mod recurrent;
pub mod timescale;

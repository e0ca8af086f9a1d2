pub mod ext4_check;

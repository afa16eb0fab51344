"""The provisioner service: owns instances and drives provider plugins (pluggy) to create them."""

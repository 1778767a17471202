"""The AWS emulator: moto in server mode, with fixes where moto differs from AWS in ways the operator depends on."""

"""Local stand-ins for outside services, speaking their wire formats; tests never leave the machine."""

"""Hardware-in-the-loop: the serial protocol host, emulated boards, flashing and checks."""

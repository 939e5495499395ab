print("bitfleet")

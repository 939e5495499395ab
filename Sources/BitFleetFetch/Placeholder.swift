// BitFleetFetch

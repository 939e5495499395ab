// BitFleetEngine

// BitFleetWorker

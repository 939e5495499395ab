// BitFleetPostgres

module example.invalid/goroutines

go 1.18

module example.invalid/cgo

go 1.18

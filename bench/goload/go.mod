module nettap/bench/goload

go 1.21

module example.test/tlspeer

go 1.18

module example.test/guestpeer

go 1.18

module github.com/kafig-dev/kafig/guest

go 1.25

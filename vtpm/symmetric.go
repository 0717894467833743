package vtpm

func init() {
	// Every command starts with the admin checks (hierarchy.go). This
	// init runs after every file that registers commands, since the go
	// command presents a package's files in name order and init functions
	// run in that order; TestAdminChecksCoverEveryCommand proves it.
	wrapAdminChecks()
}

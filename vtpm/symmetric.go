package vtpm

func init() {
	// The hierarchy enables are checked for every command's handles
	// (hierarchy.go). This init runs after every file that registers
	// commands, since Go runs a package's init functions in file name
	// order; TestHierarchyChecksCoverEveryCommand proves it.
	wrapHierarchyChecks()
}

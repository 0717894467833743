package vtpm

import (
	"sync"
	"testing"
)

// TestConcurrentUse sends commands, seals and reads from many goroutines
// at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	v := newTestTPM(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				switch i % 4 {
				case 0:
					mustSend(t, v, rawCommand(ccPCREvent, []uint32{16}, 1, nil, b2b([]byte{byte(g), byte(i)})))
				case 1:
					mustSend(t, v, rawCommand(ccGetRandom, nil, 0, nil, u16b(16)))
				case 2:
					if _, err := v.Seal(testKey); err != nil {
						t.Error(err)
					}
				case 3:
					mustSend(t, v, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{3, 0, 0, 1}))
				}
			}
		}(g)
	}
	wg.Wait()
	// Each goroutine seals at i = 2, 6, ..., 46: 12 times.
	if g := v.Generation(); g != 8*12 {
		t.Errorf("generation %d after %d seals", g, 8*12)
	}
}

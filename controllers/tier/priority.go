package tier

import (
	"slices"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// holder returns the tier that holds a priority among tiers sharing it: the oldest one, by
// creation time and then by name, so every replica and every pass picks the same tier.
// Tiers being deleted hold nothing.
func holder(tiers []fabricv1.Tier) (fabricv1.Tier, bool) {
	live := slices.DeleteFunc(slices.Clone(tiers), func(t fabricv1.Tier) bool {
		return t.DeletionTimestamp != nil
	})
	if len(live) == 0 {
		return fabricv1.Tier{}, false
	}
	slices.SortFunc(live, func(a, b fabricv1.Tier) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return live[0], true
}

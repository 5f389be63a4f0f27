package podstate_test

import "time"

// now is the fixed instant every test runs at. It has a sub-second part so that precision losses show.
var now = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// nowText is now as FormatTime writes it.
const nowText = "2026-03-14T15:09:26.535897932Z"

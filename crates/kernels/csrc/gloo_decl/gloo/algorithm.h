#pragma once
// Nothing of it is needed by c10d/ProcessGroupGloo.hpp's declarations; see ../README.md.

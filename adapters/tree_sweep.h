// What harnessd does when an adapter's guard dies without cleaning up: it
// kills, from outside, whatever is left of the tree the guard was holding.
#pragma once

#include <sys/types.h>

namespace harnessd::adapters {

/// Makes the calling process a child subreaper, so that orphans of an
/// adapter tree whose guard died become its children instead of init's
/// (where nothing could find them). Returns false if the kernel refused.
bool become_child_subreaper();

/// Kills what is left of the tree led by `leader` (a guard, or an unguarded
/// adapter) once the leader itself is dead and reaped: every process in its
/// process group or its session, and, with `orphans`, every child of this
/// process that no Process owns (see own_child: the orphans that
/// reparented to us, as a subreaper, when the guard died; only safe in a
/// process whose other children are all spawned as a Process, as harnessd's
/// are), repeatedly, as killed parents hand
/// their own children over, until a scan finds nothing. The orphans that are
/// our children are reaped. Runs on the loop thread and blocks it briefly
/// (one /proc scan when nothing is left; bounded to about half a second).
/// Returns the number of processes it killed.
int sweep_tree(pid_t leader, bool orphans);

/// The children this process spawned and has not reaped yet, on any loop
/// and thread: a sweep leaves them alone. A Process registers its child when
/// it starts it and forgets it once it has reaped it.
void own_child(pid_t pid);
void disown_child(pid_t pid);

}  // namespace harnessd::adapters

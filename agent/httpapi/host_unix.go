//go:build unix

package httpapi

import "syscall"

// diskUsage reports the size and use of the file system holding path.
func diskUsage(path string) (map[string]any, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return nil, err
	}
	bs := uint64(st.Bsize)
	total, free := st.Blocks*bs, st.Bavail*bs
	used := total - min(st.Bfree*bs, total)
	out := map[string]any{"path": path, "total": total, "free": free, "used": used}
	if total > 0 {
		out["usedPercent"] = float64(used) / float64(total) * 100
	}
	return out, nil
}

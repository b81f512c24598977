package main

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
)

// sourceMap is the part of a source map (version 3) that maps a generated
// line and column back to a source file, line and column.
type sourceMap struct {
	sources []string
	lines   [][]mapping // by generated line (0-based), sorted by column
}

type mapping struct {
	genCol  int
	src     int
	srcLine int
	srcCol  int
}

// parseSourceMap decodes a source map's sources and mappings.
func parseSourceMap(data []byte) (*sourceMap, error) {
	var raw struct {
		Version  int      `json:"version"`
		Sources  []string `json:"sources"`
		Mappings string   `json:"mappings"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw.Version != 3 {
		return nil, errors.New("not a version 3 source map")
	}
	m := &sourceMap{sources: raw.Sources}
	var src, srcLine, srcCol, name int
	for _, line := range strings.Split(raw.Mappings, ";") {
		var segs []mapping
		genCol := 0
		for _, seg := range strings.Split(line, ",") {
			if seg == "" {
				continue
			}
			var f [5]int
			n, ok := decodeVLQ(seg, f[:])
			if !ok || (n != 1 && n != 4 && n != 5) {
				return nil, errors.New("bad mappings")
			}
			genCol += f[0]
			if n == 1 {
				continue // a generated position with no source
			}
			src += f[1]
			srcLine += f[2]
			srcCol += f[3]
			if n == 5 {
				name += f[4]
			}
			if src < 0 || src >= len(m.sources) || srcLine < 0 || srcCol < 0 || genCol < 0 {
				return nil, errors.New("mapping out of range")
			}
			segs = append(segs, mapping{genCol: genCol, src: src, srcLine: srcLine, srcCol: srcCol})
		}
		sort.SliceStable(segs, func(i, j int) bool { return segs[i].genCol < segs[j].genCol })
		m.lines = append(m.lines, segs)
	}
	return m, nil
}

// decodeVLQ decodes the base64 VLQ fields of one segment into f and returns
// how many there were.
func decodeVLQ(seg string, f []int) (int, bool) {
	n, shift, value := 0, 0, 0
	for i := 0; i < len(seg); i++ {
		d := strings.IndexByte(base64Digits, seg[i])
		if d < 0 {
			return 0, false
		}
		value += (d & 31) << shift
		if d&32 != 0 {
			shift += 5
			if shift > 30 {
				return 0, false
			}
			continue
		}
		if n == len(f) {
			return 0, false
		}
		if value&1 != 0 {
			f[n] = -(value >> 1)
		} else {
			f[n] = value >> 1
		}
		n++
		shift, value = 0, 0
	}
	return n, shift == 0
}

const base64Digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// lookup maps a 1-based generated line and column to a source file and a
// 1-based line and column.
func (m *sourceMap) lookup(line, col int) (file string, srcLine, srcCol int, ok bool) {
	if m == nil || line < 1 || line > len(m.lines) {
		return "", 0, 0, false
	}
	segs := m.lines[line-1]
	i := sort.Search(len(segs), func(i int) bool { return segs[i].genCol > col-1 })
	if i == 0 {
		if len(segs) == 0 {
			return "", 0, 0, false
		}
		i = 1 // before the first mapping of the line: take it
	}
	s := segs[i-1]
	return m.sources[s.src], s.srcLine + 1, s.srcCol + 1, true
}

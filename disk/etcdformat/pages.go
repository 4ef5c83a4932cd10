package etcdformat

import (
	"encoding/binary"
	"fmt"
	"io"
)

// bbolt walks a database's branch pages trusting that they form a tree: a
// branch page pointing back up its own tree (damage, or a crafted file)
// makes a cursor descend forever, growing its stack until memory runs out,
// and bbolt's own consistency check recurses forever on it. A snapshot
// file with a sha256 trailer is checked byte for byte before bbolt reads
// it; one read with the hash check skipped, or a member's database, is
// not. So before bbolt walks a bucket, pageTree checks the part of the
// format bbolt does not: from the bucket's root, every page reached lies
// inside the database, is a branch or a leaf page, and is reached once. It
// reads page headers and branch elements (bbolt's layout, little-endian as
// on every platform etcd runs on) and nothing else, and writes nothing:
// reading keys and values, and all writing, is bbolt's.
const (
	pageHeaderBytes    = 16 // id u64, flags u16, count u16, overflow u32
	branchElementBytes = 16 // pos u32, ksize u32, child page id u64
	branchPageFlag     = 0x01
	leafPageFlag       = 0x02
	// A meta page's body: magic, version, page size, flags (4 bytes each),
	// then the root bucket (root page id, sequence), the freelist page,
	// the high-water page id, the transaction ID and a checksum.
	metaRootOffset = pageHeaderBytes + 16
	metaTxidOffset = pageHeaderBytes + 48
)

type pageTree struct {
	r        io.ReaderAt
	pageSize int64
	hwm      uint64 // pages at or past it are not part of the database
	seen     []uint64
}

func newPageTree(r io.ReaderAt, pageSize int, hwm uint64) *pageTree {
	return &pageTree{r: r, pageSize: int64(pageSize), hwm: hwm, seen: make([]uint64, (hwm+63)/64)}
}

func (p *pageTree) read(b []byte, id uint64, off int64) error {
	if _, err := p.r.ReadAt(b, int64(id)*p.pageSize+off); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return nil
}

// rootOf returns the root bucket's page in the meta page of transaction
// txid (the one bbolt opened the database at).
func (p *pageTree) rootOf(txid uint64) (uint64, error) {
	var meta [metaTxidOffset + 8]byte
	for id := uint64(0); id < 2; id++ {
		if err := p.read(meta[:], id, 0); err != nil {
			return 0, err
		}
		if binary.LittleEndian.Uint64(meta[metaTxidOffset:]) == txid {
			return binary.LittleEndian.Uint64(meta[metaRootOffset:]), nil
		}
	}
	return 0, fmt.Errorf("no meta page holds transaction %d", txid)
}

// check walks the tree under root and returns its leaf pages.
func (p *pageTree) check(root uint64) ([]uint64, error) {
	var leaves []uint64
	stack := []uint64{root}
	var header [pageHeaderBytes]byte
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id < 2 || id >= p.hwm {
			return nil, fmt.Errorf("a page points to page %d, outside the database's pages 2..%d", id, p.hwm-1)
		}
		if err := p.read(header[:], id, 0); err != nil {
			return nil, err
		}
		flags := binary.LittleEndian.Uint16(header[8:])
		count := uint64(binary.LittleEndian.Uint16(header[10:]))
		overflow := uint64(binary.LittleEndian.Uint32(header[12:]))
		if got := binary.LittleEndian.Uint64(header[0:]); got != id {
			return nil, fmt.Errorf("page %d says it is page %d", id, got)
		}
		if overflow >= p.hwm-id {
			return nil, fmt.Errorf("page %d runs %d pages past the end of the database", id, overflow)
		}
		for i := id; i <= id+overflow; i++ {
			if p.seen[i/64]&(1<<(i%64)) != 0 {
				return nil, fmt.Errorf("page %d is reached twice: the page tree loops", i)
			}
			p.seen[i/64] |= 1 << (i % 64)
		}
		switch flags {
		case leafPageFlag:
			leaves = append(leaves, id)
		case branchPageFlag:
			if pageHeaderBytes+count*branchElementBytes > uint64(p.pageSize)*(overflow+1) {
				return nil, fmt.Errorf("branch page %d claims %d elements, more than it holds", id, count)
			}
			elems := make([]byte, count*branchElementBytes)
			if err := p.read(elems, id, pageHeaderBytes); err != nil {
				return nil, err
			}
			for e := uint64(0); e < count; e++ {
				stack = append(stack, binary.LittleEndian.Uint64(elems[e*branchElementBytes+8:]))
			}
		default:
			return nil, fmt.Errorf("page %d in a bucket's tree has type %#x, neither branch nor leaf", id, flags)
		}
	}
	return leaves, nil
}

// A leaf element: flags u32, pos u32 (from the element to its key), key
// size u32, value size u32; the value follows the key. A bucket's value
// opens with its root page (0 for an inline bucket) and sequence, and an
// inline bucket's one leaf page follows them inside the value.
const (
	leafElementBytes = 16
	bucketLeafFlag   = 0x01
	bucketHeaderSize = 16
)

// checkInlineBuckets checks the inline buckets the leaf pages of the root
// bucket's tree hold: each is one leaf page lying inside its value. bbolt
// takes an inline page of another type for a branch whose children are the
// page itself, and loops.
func (p *pageTree) checkInlineBuckets(leaves []uint64) error {
	for _, id := range leaves {
		var header [pageHeaderBytes]byte
		if err := p.read(header[:], id, 0); err != nil {
			return err
		}
		count := int64(binary.LittleEndian.Uint16(header[10:]))
		size := p.pageSize * (int64(binary.LittleEndian.Uint32(header[12:])) + 1)
		page := make([]byte, size)
		if err := p.read(page, id, 0); err != nil {
			return err
		}
		if pageHeaderBytes+count*leafElementBytes > size {
			return fmt.Errorf("leaf page %d claims %d elements, more than it holds", id, count)
		}
		for e := int64(0); e < count; e++ {
			at := pageHeaderBytes + e*leafElementBytes
			el := page[at : at+leafElementBytes]
			if binary.LittleEndian.Uint32(el[0:])&bucketLeafFlag == 0 {
				continue
			}
			pos, ksize, vsize := int64(binary.LittleEndian.Uint32(el[4:])), int64(binary.LittleEndian.Uint32(el[8:])), int64(binary.LittleEndian.Uint32(el[12:]))
			start := at + pos + ksize
			if start+vsize > size || vsize < bucketHeaderSize {
				return fmt.Errorf("leaf page %d: bucket %d's value lies outside the page", id, e)
			}
			value := page[start : start+vsize]
			if binary.LittleEndian.Uint64(value[0:]) != 0 {
				continue // a bucket of its own pages, checked from its root
			}
			inline := value[bucketHeaderSize:]
			if len(inline) < pageHeaderBytes || binary.LittleEndian.Uint16(inline[8:]) != leafPageFlag {
				return fmt.Errorf("leaf page %d: inline bucket %d is not a leaf page", id, e)
			}
			n := int64(binary.LittleEndian.Uint16(inline[10:]))
			if pageHeaderBytes+n*leafElementBytes > int64(len(inline)) {
				return fmt.Errorf("leaf page %d: inline bucket %d claims %d elements, more than it holds", id, e, n)
			}
			for j := int64(0); j < n; j++ {
				at := pageHeaderBytes + j*leafElementBytes
				el := inline[at : at+leafElementBytes]
				end := at + int64(binary.LittleEndian.Uint32(el[4:])) + int64(binary.LittleEndian.Uint32(el[8:])) + int64(binary.LittleEndian.Uint32(el[12:]))
				if end > int64(len(inline)) {
					return fmt.Errorf("leaf page %d: inline bucket %d's element %d lies outside it", id, e, j)
				}
			}
		}
	}
	return nil
}

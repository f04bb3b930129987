//! A Fides dataset manifest is accepted as a system: collections, categories, identity,
//! primary keys and references in both directions, overlaid with lethe settings.

use std::path::Path;

use lethe::policy::{ErasureMode, EventBinding, Masking, Policy};

#[test]
fn a_fides_manifest_becomes_the_systems_collections() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fides");
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let shop = checked.policy.system("shop").unwrap();
    let names: Vec<&str> = shop.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["customer", "orders", "login"]);

    let customer = &shop.collections[0];
    let email = customer
        .fields
        .iter()
        .find(|f| f.name.as_str() == "email")
        .unwrap();
    assert_eq!(email.identity.as_ref().unwrap().as_str(), "email");
    assert_eq!(email.categories[0].as_str(), "user.contact.email");
    let id = &customer.fields[0];
    assert!(id.primary_key);
    // `system.*` categories are not personal data.
    let created = customer
        .fields
        .iter()
        .find(|f| f.name.as_str() == "created")
        .unwrap();
    assert!(created.categories.is_empty());
    assert_eq!(
        *customer.events["collected"],
        EventBinding::parse("created").unwrap()
    );

    let orders = &shop.collections[1];
    assert_eq!(orders.erasure(), ErasureMode::KeepRow);
    let fk = orders
        .fields
        .iter()
        .find(|f| f.name.as_str() == "customer_id")
        .unwrap();
    assert_eq!(fk.references.as_ref().unwrap().to_string(), "customer.id");
    let addr = orders
        .fields
        .iter()
        .find(|f| f.name.as_str() == "shipping_address")
        .unwrap();
    assert_eq!(addr.masking, Some(Masking::Fixed("erased".into())));
    assert_eq!(addr.categories[0].as_str(), "user.contact.address");

    // `direction: to` on customer.id means login.customer_id is filled from it.
    let login = &shop.collections[2];
    assert_eq!(
        login.fields[1].references.as_ref().unwrap().to_string(),
        "customer.id"
    );
    // The system's default purpose applies to every imported field.
    assert_eq!(
        checked.policy.field_purposes(shop, orders, addr)[0].as_str(),
        "orders"
    );
}

#[test]
fn an_overlay_naming_a_collection_the_manifest_lacks_is_an_error() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fides");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fides")).unwrap();
    std::fs::copy(
        src.join("fides/shop_dataset.yml"),
        dir.path().join("fides/shop_dataset.yml"),
    )
    .unwrap();
    let policy = std::fs::read_to_string(src.join("policy.yaml")).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy.replace("name: customer,", "name: customers,"),
    )
    .unwrap();
    let checked = Policy::load(dir.path()).unwrap();
    let e = checked
        .errors()
        .find(|d| d.message.contains("not in the Fides dataset"))
        .unwrap();
    assert_eq!(e.location.line, 19);
    assert_eq!(e.hint.as_deref(), Some("did you mean `customer`?"));
}
